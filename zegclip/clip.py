"""Build the frozen open_clip CLIP that every model family stands on.

Weights come from an open_clip pretrained tag, a local file or an fsspec URI (downloaded once per
node through :mod:`zegclip.weights`), or from the caller (embedded in a checkpoint).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zegclip._torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()
import open_clip  # noqa: E402
import torch  # noqa: E402
from open_clip.model import CLIP  # noqa: E402
from torch import nn  # noqa: E402

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSpec:
    """Which frozen CLIP to build and where its weights come from.

    Attributes:
        model: open_clip model name (``ViT-B-16``, ``ViT-B-16-quickgelu``, ...) or the path of an
            open_clip model config JSON (a custom architecture, registered under its file stem).
        pretrained: open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``), a local path or an
            fsspec URI (``s3://``, ``gs://``) of open_clip-format weights; None = weights come from
            the checkpoint itself (embedded) or random init (tests only).
        config: explicit open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``);
            set by the official-checkpoint converter, which infers it from tensor shapes.
        quick_gelu: OpenAI CLIP weights use QuickGELU; None derives it from the pretrained tag.
        image_size: ViT input size; the positional grid is resized to it at load time (ZegCLIP:
            512). The training-free methods build at :func:`native_image_size` instead and resize
            per window.
    """

    model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    config: dict[str, Any] | None = None
    quick_gelu: bool | None = None
    image_size: int = 512


class WeightsError(FileNotFoundError):
    """CLIP weights could not be found or loaded; the message names the flag to fix it."""


def weights_source(value: str | None) -> str | None:
    """A weights tag, path or URI; None where ``value`` means "no weights" (None, "", "none")."""
    if value is None or value.strip().lower() in ("", "none"):
        return None
    return value


def model_name(model: str) -> str:
    """The open_clip name of ``model``; a config JSON path is registered with open_clip first.

    Raises:
        ValueError: a ``.json`` path that is not a file.
    """
    if not model.endswith(".json"):
        return model
    path = Path(model).expanduser()
    if not path.is_file():
        raise ValueError(f"CLIP model config {model}: no such file")
    if open_clip.get_model_config(path.stem) is None:
        open_clip.add_model_config(path)
    return path.stem


def model_config(spec: ClipSpec, image_size: int | None = None) -> dict[str, Any]:
    """open_clip config dict for ``spec``, its image size forced to ``image_size``.

    Args:
        spec: which model.
        image_size: ViT input size; None = ``spec.image_size``.

    Raises:
        ValueError: an unknown model name.
    """
    cfg = _own_config(spec)
    cfg["vision_cfg"]["image_size"] = spec.image_size if image_size is None else image_size
    return cfg


def native_image_size(spec: ClipSpec) -> int:
    """The input size ``spec``'s model was trained at (224 for ViT-B/16): its own table's size."""
    return int(_own_config(spec)["vision_cfg"]["image_size"])


def _own_config(spec: ClipSpec) -> dict[str, Any]:
    if spec.config is not None:
        return copy.deepcopy(spec.config)
    cfg = open_clip.get_model_config(model_name(spec.model))
    if cfg is None:
        raise ValueError(
            f"unknown CLIP model '{spec.model}'; choose one of open_clip.list_models()."
        )
    return cfg


def uses_quick_gelu(spec: ClipSpec) -> bool:
    """QuickGELU for OpenAI-trained weights; taken from the pretrained tag when not given."""
    if spec.quick_gelu is not None:
        return spec.quick_gelu
    name = model_name(spec.model)
    if spec.pretrained and open_clip.is_pretrained_cfg(name, spec.pretrained):
        return bool(open_clip.get_pretrained_cfg(name, spec.pretrained).get("quick_gelu"))
    return bool(model_config(spec).get("quick_gelu", False))


def build_clip(spec: ClipSpec, *, load_weights: bool = True) -> CLIP:
    """Build CLIP in eval mode, every parameter float32 and frozen, for ``spec.image_size`` inputs.

    Weights are loaded at the model's native size; a different ``spec.image_size`` then gets
    open_clip's load-time positional resize (bicubic, ``size=``) on the float32 table, so float16
    weight files load for every size.

    Args:
        spec: which model and weights.
        load_weights: False builds random weights (the caller loads embedded ones).

    Raises:
        WeightsError: weights requested but unavailable (offline, missing file, bad URI).
    """
    if load_weights and spec.pretrained:
        clip = _resized(_load_pretrained(spec), spec)
    else:
        clip = _new_clip(spec, spec.image_size)
    clip.eval()
    clip.requires_grad_(False)
    return clip


def build_towers(spec: ClipSpec, *, load_weights: bool = True) -> tuple[nn.Module, CLIP]:
    """:func:`build_clip` split into its ViT and the CLIP keeping the text tower.

    Returns:
        the frozen ``VisionTransformer`` and the CLIP whose ``visual`` is now ``nn.Identity``.
    """
    clip = build_clip(spec, load_weights=load_weights)
    visual = clip.visual
    clip.visual = nn.Identity()
    return visual, clip


RANDOM_WEIGHTS_SEED = 0


def _new_clip(spec: ClipSpec, image_size: int) -> CLIP:
    """A new CLIP whose initial weights come from a fixed seed (``RANDOM_WEIGHTS_SEED``), in a
    forked RNG (the caller's random state is untouched): every process and Ray actor of a
    ``--clip-pretrained none`` run builds the same model, so such runs are reproducible and
    their actors agree. Loaded weights replace these anyway."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return CLIP(**model_config(spec, image_size), quick_gelu=uses_quick_gelu(spec))


def _resized(clip: CLIP, spec: ClipSpec) -> CLIP:
    """``clip`` rebuilt for ``spec.image_size`` inputs with open_clip's positional resize."""
    if clip.visual.positional_embedding.shape[0] == _new_table_length(spec):
        return clip
    state = {k: v.float() for k, v in clip.state_dict().items()}
    target = _new_clip(spec, spec.image_size)
    open_clip.model.resize_pos_embed(state, target)
    target.load_state_dict(state)
    return target


def _new_table_length(spec: ClipSpec) -> int:
    cfg = model_config(spec)["vision_cfg"]
    return (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1


def _load_pretrained(spec: ClipSpec) -> CLIP:
    """CLIP at its native input size with the weights ``spec.pretrained`` names, in float32."""
    assert spec.pretrained is not None
    source = spec.pretrained
    name = model_name(spec.model)
    if not open_clip.is_pretrained_cfg(name, source):
        from zegclip.weights import fetch_cached

        source = str(fetch_cached(source, flag="--clip-weights"))
    try:
        if spec.config is not None:  # an inferred config, not an open_clip config name
            clip = _new_clip(spec, native_image_size(spec))
            open_clip.load_checkpoint(clip, source)  # safetensors or weights_only torch.load
        else:
            clip = open_clip.create_model(
                name, pretrained=source, force_quick_gelu=uses_quick_gelu(spec)
            )
    except Exception as e:  # open_clip raises RuntimeError/OSError/HF errors when offline
        raise WeightsError(
            f"could not load CLIP weights '{spec.pretrained}' for {spec.model}: "
            f"{type(e).__name__}: {e}. On machines without internet, stage the open_clip weights "
            "file on local disk or object storage and pass --clip-weights PATH_OR_URI."
        ) from e
    if not isinstance(clip, CLIP):
        raise ValueError(f"{spec.model} is not a ViT CLIP supported by ZegCLIP ({type(clip)})")
    return clip.float()


def tokenizer_for(spec: ClipSpec):
    """open_clip tokenizer matching the text tower (BPE with 77-token context for OpenAI CLIP)."""
    name = "ViT-B-16" if spec.config is not None else model_name(spec.model)
    return open_clip.get_tokenizer(name)
