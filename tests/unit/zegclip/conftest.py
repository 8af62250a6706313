"""Tiny random ZegCLIP models the tests build themselves (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_zegclip import tiny_config

import zegclip


@pytest.fixture(scope="session")
def tiny_model() -> zegclip.ZegCLIP:
    torch.manual_seed(0)
    return zegclip.build_zegclip(tiny_config())


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return zegclip.save_checkpoint(tiny_model, path, embed_clip=True)
