"""Model configuration: frozen dataclasses, serialisable to the JSON stored in checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .templates import SINGLE

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClipSpec:
    """Which frozen CLIP to build and where its weights come from.

    Attributes:
        model: open_clip model name (``ViT-B-16``, ``ViT-B-16-quickgelu``, ...) or ``tiny-test``.
        pretrained: open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``), a local path or an
            fsspec URI (``s3://``, ``gs://``) of open_clip-format weights; None = weights come from
            the checkpoint itself (embedded) or random init (tests only).
        config: explicit open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``);
            set by the official-checkpoint converter, which infers it from tensor shapes.
        quick_gelu: OpenAI CLIP weights use QuickGELU; None derives it from the pretrained tag.
        image_size: ViT input size; the positional grid is resized to it (ZegCLIP: 512).
    """

    model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    config: dict[str, Any] | None = None
    quick_gelu: bool | None = None
    image_size: int = 512


@dataclass(frozen=True)
class ZegCLIPConfig:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZegCLIPConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: newer format version or unknown fields.
        """
        return config_from_dict(cls, data, tuple_fields=("seen_classes", "templates"))


def config_from_dict(cls: type, data: dict[str, Any], *, tuple_fields: tuple[str, ...]) -> Any:
    """Rebuild a model-family config dataclass from its ``to_dict`` JSON.

    Raises:
        ValueError: newer format version or fields ``cls`` does not have.
    """
    data = dict(data)
    version = data.pop("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint format {version} is newer than this code ({FORMAT_VERSION}); upgrade."
        )
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    data["clip"] = ClipSpec(**data.get("clip", {}))
    for key in tuple_fields:
        if key in data:
            data[key] = tuple(data[key])
    return cls(**data)
