"""Model configuration: frozen dataclasses, serialisable to the JSON stored in checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

from zegclip.clip import ClipSpec
from zegclip.models.config import FamilyConfig
from zegclip.templates import SINGLE


@dataclass(frozen=True)
class ZegCLIPConfig(FamilyConfig):
    """ZegCLIP architecture and inference settings (defaults: the official VOC config).

    Attributes:
        clip: the frozen CLIP.
        num_prompt_tokens: T deep prompt tokens per layer (VOC 10, COCO-Stuff 100).
        decoder_layers / decoder_heads / decoder_ffn_dim: the TPN decoder (3 / 8 / 2048).
        dropout: decoder and prompt dropout (train only).
        seen_classes: classes seen in training; in inductive inference they get ``-seen_shift``.
        templates: prompt templates used to encode class names.
        seen_shift: the official 0.1 calibration against seen-class bias.
        short_side / crop_size / stride: test-time resize and sliding window (512 / 512 / 426).
    """

    clip: ClipSpec = field(default_factory=ClipSpec)
    family: str = "zegclip"
    num_prompt_tokens: int = 10
    decoder_layers: int = 3
    decoder_heads: int = 8
    decoder_ffn_dim: int = 2048
    dropout: float = 0.1
    seen_classes: tuple[str, ...] = ()
    templates: tuple[str, ...] = SINGLE
    seen_shift: float = 0.1
    short_side: int = 512
    crop_size: int = 512
    stride: int = 426
