"""On-disk cache of vocabulary embeddings, keyed by (model weights, vocabulary rows, templates).

Encoding a COCO-sized vocabulary with 80 templates costs minutes of CPU (171 classes x 15
templates took 53 s on the 2-core development machine), and scheduled jobs re-use the same
vocabulary every day: the driver looks here first.
Files: ``$ZEGCLIP_CACHE/embeddings/<sha256>.npy``, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from zegclip.weights import _resolve_cache_dir

logger = logging.getLogger(__name__)


def embedding_key(model_identity: dict, names: Sequence[str], templates: Sequence[str]) -> str:
    """sha256 over a JSON of the model identity, the row names and the templates."""
    blob = json.dumps(
        {"model": model_identity, "names": list(names), "templates": list(templates)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def file_identity(path: str | Path) -> dict:
    """Cheap identity of a local weights file: resolved path, size and modification time."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cached_embeddings(
    key: str, compute: Callable[[], np.ndarray], *, cache_dir: str | None = None
) -> np.ndarray:
    """Return the cached array for ``key`` or compute, store and return it.

    A corrupt cache file is ignored and rewritten.
    """
    folder = _resolve_cache_dir(cache_dir) / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key}.npy"
    if target.is_file():
        try:
            emb = np.load(target, allow_pickle=False)
            logger.info("vocabulary embeddings loaded from cache %s", target.name)
            return emb
        except (OSError, ValueError):
            logger.warning("ignoring unreadable embedding cache file %s", target)
    emb = compute()
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, emb, allow_pickle=False)
    os.replace(tmp, target)
    return emb
