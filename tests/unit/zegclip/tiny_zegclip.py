"""The tiny random ZegCLIP config the zegclip unit tests build (no downloads)."""

from __future__ import annotations

from tiny_models import TINY_CLIP

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
