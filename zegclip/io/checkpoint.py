"""Self-describing checkpoints: one ``.safetensors`` file whose header holds the JSON config.

Layout: tensors are the trainable parameters (``backbone.prompt_*``, ``head.*``) and, when the
frozen CLIP is embedded, its weights under ``clip.*`` (``clip.visual.*`` for the ViT, the text
tower at ``clip.*``). The header's ``__metadata__`` has ``zegclip_config`` (the model config,
including the CLIP model name and weights source, seen classes, templates and preprocessing)
and ``format`` = ``zegclip-checkpoint``. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from zegclip.models.zegclip.build import build_zegclip
from zegclip.models.zegclip.config import ZegCLIPConfig
from zegclip.models.zegclip.model import ZegCLIP
from zegclip.models.zegot.config import ZegOTConfig
from zegclip.models.zegot.model import ZegOT, build_zegot

logger = logging.getLogger(__name__)

FORMAT_TAG = "zegclip-checkpoint"
CLIP_PREFIX = "clip."


class CheckpointError(ValueError):
    """A checkpoint that is not ours, is malformed, or does not match its config."""


TRAINING_DATA = "training_data"  # header key: JSON of what the model was trained on


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    embed_clip: bool = False,
    training_data: dict | None = None,
) -> Path:
    """Write ``model`` atomically to ``path`` (a ``.safetensors`` file).

    Args:
        model: a ZegCLIP-family model: ``config`` (with ``to_dict``), ``trainable_state_dict()``,
            ``clip_visual`` and ``text`` (the frozen towers).
        path: destination file.
        embed_clip: also store the frozen CLIP weights (for offline use or converted checkpoints
            whose CLIP cannot be referenced by a tag).
        training_data: JSON-ready description of the training data (sources, human/machine
            provenance), stored under the ``training_data`` header key.
    """
    if not embed_clip and not model.config.clip.pretrained:
        raise ValueError(
            "this model's CLIP weights have no source (clip.pretrained is None): save with "
            "embed_clip=True, or set the config's clip.pretrained to a tag, path or URI."
        )
    tensors = dict(model.trainable_state_dict())
    if embed_clip:
        tensors.update(clip_state_dict(model))
    meta = {
        "format": FORMAT_TAG,
        "zegclip_config": json.dumps(model.config.to_dict()),
        "embeds_clip": json.dumps(embed_clip),
    }
    if training_data is not None:
        meta[TRAINING_DATA] = json.dumps(training_data, sort_keys=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=meta
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def clip_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Frozen CLIP weights under ``clip.*`` (ViT at ``clip.visual.*``)."""
    out = {f"{CLIP_PREFIX}visual.{k}": v for k, v in model.clip_visual.state_dict().items()}
    if model.text is not None:
        text = {k: v for k, v in model.text.state_dict().items() if not k.startswith("visual.")}
        out.update({f"{CLIP_PREFIX}{k}": v for k, v in text.items()})
    return out


def is_safetensors(path: str | Path) -> bool:
    """True when the file's bytes are a safetensors file, whatever its name: an 8-byte
    little-endian header length that fits the file, then a JSON object."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return 2 <= size <= path.stat().st_size - 8 and head[8:9] == b"{"


def read_header(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file.

    Raises:
        CheckpointError: not a ZegCLIP-family checkpoint.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{path} is not a zegclip checkpoint (no '{FORMAT_TAG}' header); official ZegCLIP "
            "'.pth' files load directly or convert with `zegclip convert-official`."
        )
    return meta


def training_data(path: str | Path) -> dict | None:
    """The ``training_data`` header of one of our checkpoints, or None (absent, not ours)."""
    try:
        meta = read_header(path)
    except (CheckpointError, OSError, ValueError):
        return None
    return json.loads(meta[TRAINING_DATA]) if TRAINING_DATA in meta else None


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, on CPU."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def load_family_checkpoint(
    path: str | Path, config_cls: type, builder: Callable[..., nn.Module], *, with_text: bool = True
) -> nn.Module:
    """Rebuild a model of one family from one of our checkpoints (CPU, eval mode).

    Args:
        path: the ``.safetensors`` file.
        config_cls: the family's config dataclass (``from_dict``).
        builder: ``builder(config, load_clip_weights=..., with_text=...)``.

    Raises:
        CheckpointError: header, family or tensors do not match.
    """
    meta = read_header(path)
    data = json.loads(meta["zegclip_config"])
    family = config_cls.__dataclass_fields__["family"].default
    if data.get("family", "zegclip") != family:
        raise CheckpointError(f"{path} holds a '{data.get('family')}' model, not {family}")
    config = config_cls.from_dict(data)
    embeds_clip = json.loads(meta.get("embeds_clip", "false"))
    tensors = load_tensors(path)
    model = builder(config, load_clip_weights=not embeds_clip, with_text=with_text)
    if embeds_clip:
        load_clip_into(model, {k: v for k, v in tensors.items() if k.startswith(CLIP_PREFIX)})
    load_trainable(model, {k: v for k, v in tensors.items() if not k.startswith(CLIP_PREFIX)})
    return model.eval()


def load_zegclip_checkpoint(path: str | Path, *, with_text: bool = True) -> ZegCLIP:
    """Rebuild a ZegCLIP from one of our checkpoints (CPU, eval mode)."""
    return load_family_checkpoint(path, ZegCLIPConfig, build_zegclip, with_text=with_text)


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load trainable parameters, refusing missing, unexpected or mis-shaped keys."""
    expected = model.trainable_state_dict()
    _check_keys("trainable", expected, state)
    model.load_state_dict(state, strict=False)


def load_clip_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load embedded CLIP weights (``clip.*``) into the backbone ViT and the text tower."""
    visual_prefix = f"{CLIP_PREFIX}visual."
    visual = {k[len(visual_prefix) :]: v for k, v in state.items() if k.startswith(visual_prefix)}
    text = {k[len(CLIP_PREFIX) :]: v for k, v in state.items() if not k.startswith(visual_prefix)}
    _check_keys("CLIP vision", model.clip_visual.state_dict(), visual)
    model.clip_visual.load_state_dict(visual)
    if model.text is not None:
        expected = {k: v for k, v in model.text.state_dict().items() if not k.startswith("visual.")}
        _check_keys("CLIP text", expected, text, optional={"logit_scale", "logit_bias"})
        model.text.load_state_dict(text, strict=False)


def _check_keys(
    what: str,
    expected: dict[str, torch.Tensor],
    got: dict[str, torch.Tensor],
    optional: set[str] = frozenset(),
) -> None:
    missing = sorted(set(expected) - set(got) - optional)
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(k for k in set(expected) & set(got) if expected[k].shape != got[k].shape)
    if missing or unexpected or shapes:
        detail = "; ".join(
            f"{name}: {keys[:6]}{' ...' if len(keys) > 6 else ''}"
            for name, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", shapes),
            )
            if keys
        )
        raise CheckpointError(f"{what} weights do not match the model config ({detail})")


def load_zegot_checkpoint(path: str | Path, *, with_text: bool = True) -> ZegOT:
    """Rebuild a ZegOT from one of our checkpoints (CPU, eval mode).

    Raises:
        CheckpointError: not a ZegOT checkpoint, or tensors that do not match its config.
    """
    return load_family_checkpoint(path, ZegOTConfig, build_zegot, with_text=with_text)
