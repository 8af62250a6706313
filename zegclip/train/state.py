"""Periodic training checkpoints under an output folder (local path or fsspec URI).

Layout::

    <output>/checkpoints/iter_00000300.safetensors   model (zegclip.save_checkpoint format)
    <output>/checkpoints/iter_00000300.state.pt      optimiser, step, data position (torch.save)
    <output>/checkpoints/latest.json                 {"step", "model", "state"}; written last
    <output>/model_final.safetensors                 the final model

The state file holds only tensors and plain Python values and is read back with
``torch.load(weights_only=True)``. ``latest.json`` is replaced after both files exist, so a run
killed mid-write resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import fsspec
import torch
from torch import nn

from zegclip.io.checkpoint import save_checkpoint

logger = logging.getLogger(__name__)

LATEST = "latest.json"


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _put(local: Path, uri: str) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(local), path)


def save_model(
    model: nn.Module,
    uri: str,
    *,
    embed_clip: bool,
    transductive: bool,
    training_data: dict | None = None,
) -> None:
    """Write ``model`` in the project format to a local path or URI.

    Self-trained (transductive) models are stored with ``seen_shift`` 0: the official code only
    shifts seen-class scores for inductive checkpoints. ``training_data`` goes in the header
    (see ``zegclip.io.checkpoint.save_checkpoint``).
    """
    config = model.config
    if transductive:  # both trainable families (ZegCLIP, ZegOT) have seen_shift
        model.config = dataclasses.replace(config, seen_shift=0.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model.safetensors"
            save_checkpoint(model, local, embed_clip=embed_clip, training_data=training_data)
            _put(local, uri)
    finally:
        model.config = config


def save_training_checkpoint(
    output: str,
    model: nn.Module,
    state: dict,
    *,
    embed_clip: bool,
    transductive: bool,
    training_data: dict | None = None,
) -> str:
    """Write model + training state for ``state["step"]`` and point ``latest.json`` at them.

    Returns:
        the model checkpoint URI.
    """
    step = int(state["step"])
    stem = _join(output, "checkpoints", f"iter_{step:08d}")
    model_uri, state_uri = f"{stem}.safetensors", f"{stem}.state.pt"
    save_model(
        model,
        model_uri,
        embed_clip=embed_clip,
        transductive=transductive,
        training_data=training_data,
    )
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "state.pt"
        torch.save(state, local)
        _put(local, state_uri)
        pointer = Path(tmp) / LATEST
        pointer.write_text(json.dumps({"step": step, "model": model_uri, "state": state_uri}))
        _put(pointer, _join(output, "checkpoints", LATEST))
    logger.info("checkpoint at step %d -> %s", step, model_uri)
    return model_uri


def find_latest(output: str) -> dict | None:
    """The ``latest.json`` record under ``output``, or None when there is no checkpoint."""
    fs, path = fsspec.core.url_to_fs(_join(output, "checkpoints", LATEST))
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as f:
        return json.load(f)


def fetch_local(uri: str, directory: str | Path) -> Path:
    """Copy a checkpoint file to ``directory`` (no-op for local paths)."""
    if "://" not in uri:
        return Path(uri)
    local = Path(directory) / uri.rsplit("/", 1)[-1]
    fs, path = fsspec.core.url_to_fs(uri)
    fs.get_file(path, str(local))
    return local


def load_training_state(uri: str) -> dict:
    """Read a ``*.state.pt`` file (tensors and plain values only; never unpickles objects)."""
    with fsspec.open(uri, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)
