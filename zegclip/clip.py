"""Build the frozen open_clip CLIP that every model family stands on.

Weights come from an open_clip pretrained tag, a local file or an fsspec URI (downloaded once per
node through :mod:`zegclip.weights`), or from the caller (embedded in a checkpoint).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from ._torchvision_compat import ensure_torchvision_importable
from .config import ClipSpec

ensure_torchvision_importable()
import open_clip  # noqa: E402
from open_clip.model import CLIP  # noqa: E402

logger = logging.getLogger(__name__)

# A 2-layer, width-64 CLIP for tests and smoke runs; same code paths as ViT-B/16.
TINY_TEST_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 512, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class WeightsError(FileNotFoundError):
    """CLIP weights could not be found or loaded; the message names the flag to fix it."""


def model_config(spec: ClipSpec) -> dict[str, Any]:
    """open_clip config dict for ``spec`` with the image size forced to ``spec.image_size``."""
    if spec.config is not None:
        cfg = copy.deepcopy(spec.config)
    elif spec.model == "tiny-test":
        cfg = copy.deepcopy(TINY_TEST_CONFIG)
    else:
        cfg = open_clip.get_model_config(spec.model)
        if cfg is None:
            raise ValueError(
                f"unknown CLIP model '{spec.model}'; choose one of open_clip.list_models()."
            )
    cfg["vision_cfg"]["image_size"] = spec.image_size
    return cfg


def uses_quick_gelu(spec: ClipSpec) -> bool:
    """QuickGELU for OpenAI-trained weights; taken from the pretrained tag when not given."""
    if spec.quick_gelu is not None:
        return spec.quick_gelu
    if spec.pretrained and open_clip.is_pretrained_cfg(spec.model, spec.pretrained):
        return bool(open_clip.get_pretrained_cfg(spec.model, spec.pretrained).get("quick_gelu"))
    return bool(model_config(spec).get("quick_gelu", False))


def build_clip(spec: ClipSpec, *, load_weights: bool = True) -> CLIP:
    """Build CLIP in eval mode with every parameter frozen.

    Args:
        spec: which model and weights.
        load_weights: False builds random weights (the caller loads embedded ones).

    Raises:
        WeightsError: weights requested but unavailable (offline, missing file, bad URI).
    """
    if load_weights and spec.pretrained:
        clip = _load_pretrained(spec)
    else:
        cfg = model_config(spec)
        cfg["quick_gelu"] = uses_quick_gelu(spec)
        clip = CLIP(**cfg)
    clip.eval()
    clip.requires_grad_(False)
    return clip


def _load_pretrained(spec: ClipSpec) -> CLIP:
    assert spec.pretrained is not None
    source = spec.pretrained
    is_tag = open_clip.is_pretrained_cfg(spec.model, source)
    if not is_tag:
        from .weights import fetch_cached

        source = str(fetch_cached(source, flag="--clip-weights"))
    kwargs: dict[str, Any] = {"force_image_size": spec.image_size}
    if uses_quick_gelu(spec):
        kwargs["force_quick_gelu"] = True
    try:
        if spec.config is not None or spec.model == "tiny-test":  # not an open_clip config name
            clip = CLIP(**model_config(spec), quick_gelu=uses_quick_gelu(spec))
            open_clip.load_checkpoint(clip, source)  # safetensors or weights_only torch.load
        else:
            clip = open_clip.create_model(spec.model, pretrained=source, **kwargs)
    except Exception as e:  # open_clip raises RuntimeError/OSError/HF errors when offline
        raise WeightsError(
            f"could not load CLIP weights '{spec.pretrained}' for {spec.model}: "
            f"{type(e).__name__}: {e}. On machines without internet, stage the open_clip weights "
            "file on local disk or object storage and pass --clip-weights PATH_OR_URI."
        ) from e
    if not isinstance(clip, CLIP):
        raise ValueError(f"{spec.model} is not a ViT CLIP supported by ZegCLIP ({type(clip)})")
    return clip


def tokenizer_for(spec: ClipSpec):
    """open_clip tokenizer matching the text tower (BPE with 77-token context for OpenAI CLIP)."""
    name = "ViT-B-16" if spec.model == "tiny-test" or spec.config is not None else spec.model
    return open_clip.get_tokenizer(name)
