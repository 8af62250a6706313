"""``load_model``: any supported checkpoint (ours or the authors') from a path or URI."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from zegclip.io.checkpoint import (
    CheckpointError,
    load_zegclip_checkpoint,
    load_zegot_checkpoint,
    read_header,
)

logger = logging.getLogger(__name__)

OFFICIAL_SUFFIXES = (".pth", ".pt")

# family name in a checkpoint's config -> loader(path, with_text=...).
FAMILY_LOADERS: dict[str, Callable[..., nn.Module]] = {
    "zegclip": load_zegclip_checkpoint,
    "zegot": load_zegot_checkpoint,
}


def local_path(path_or_uri: str | Path, *, flag: str = "--checkpoint") -> Path:
    """Local file for a path or fsspec URI (URIs are downloaded once per node and cached).

    Raises:
        FileNotFoundError: nothing at that location; the message names ``flag``.
    """
    text = str(path_or_uri)
    if "://" in text:
        from zegclip.weights import fetch_cached

        return Path(fetch_cached(text, flag=flag))
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {text}: no such file")
    return path


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    with_text: bool = True,
    seen_classes: tuple[str, ...] = (),
) -> nn.Module:
    """Load a ZegCLIP-family model in eval mode.

    Args:
        path: our ``.safetensors`` checkpoint or an official ZegCLIP ``.pth``; local or URI.
        device: where to put it.
        with_text: keep the text tower (needed by ``encode_vocabulary``).
        seen_classes: for official ``.pth`` files only: the training classes that get the
            inductive seen-class shift (ours store them in the checkpoint).

    Raises:
        FileNotFoundError: missing file. CheckpointError: unreadable or unknown format.
    """
    file = local_path(path)
    if file.suffix in OFFICIAL_SUFFIXES:
        from zegclip.io.convert import convert_official

        model = convert_official(file, seen_classes=tuple(seen_classes))
        if not with_text:
            model.drop_text_tower()
        return model.to(device)
    family = json.loads(read_header(file)["zegclip_config"]).get("family", "zegclip")
    if family not in FAMILY_LOADERS:
        raise CheckpointError(f"{file}: unknown model family '{family}'")
    return FAMILY_LOADERS[family](file, with_text=with_text).to(device)
