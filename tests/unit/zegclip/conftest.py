"""Tiny random ZegCLIP models the tests build themselves (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import TINY_CLIP

import zegclip
from zegclip import ClipSpec, ZegCLIPConfig


def tiny_config(**overrides) -> ZegCLIPConfig:
    """2-layer width-64 CLIP, 3-layer decoder with a 128-wide FFN, 4 prompt tokens."""
    base = dict(
        clip=ClipSpec(model=TINY_CLIP, pretrained=None),
        num_prompt_tokens=4,
        decoder_ffn_dim=128,
        seen_classes=("car", "road"),
    )
    base.update(overrides)
    return ZegCLIPConfig(**base)


@pytest.fixture(scope="session")
def tiny_model() -> zegclip.ZegCLIP:
    torch.manual_seed(0)
    return zegclip.build_zegclip(tiny_config())


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return zegclip.save_checkpoint(tiny_model, path, embed_clip=True)
