"""Where training and evaluation pairs come from, chosen from the jobs' data flags.

``--images`` + ``--masks`` folders, a ``--data`` folder with ``images/`` and ``masks/``, Parquet
with image and mask columns, or a labelling run's output (its pseudo-labels).
"""

from __future__ import annotations

import fsspec

from zegclip.train.data import SegPair, folder_pairs, parquet_pairs
from zegclip.train.run_pairs import is_run, run_pairs
from zegclip.vocab import parse_vocabulary


def read_classes(uri: str) -> list[str]:
    """Class display names from a vocabulary file (local or URI)."""
    with fsspec.open(uri, "r", encoding="utf-8") as f:
        vocab = parse_vocabulary(f.read().splitlines(), source=uri)
    return vocab.names


def read_unseen(spec: str) -> list[str]:
    """``a,b`` or a file with one name per line (``#`` comments allowed); empty = none."""
    if not spec:
        return []
    fs, path = fsspec.core.url_to_fs(spec)
    if fs.isfile(path):
        with fs.open(path, "r") as f:
            lines = [line.split("#", 1)[0].strip() for line in f.read().splitlines()]
        return [line for line in lines if line]
    return [s.strip() for s in spec.split(",") if s.strip()]


def load_pairs(
    *,
    data: str = "",
    images: str = "",
    masks: str = "",
    image_column: str = "image",
    mask_column: str = "mask",
    classes: str = "",
    min_confidence: float = 0.0,
) -> list[SegPair]:
    """Pairs from ``--images/--masks``, a ``--data`` folder (images/, masks/), Parquet, or a
    labelling run (``run.json`` present; masks are its pseudo-labels, named by ``classes``).

    Raises:
        ValueError: neither or both data options given.
    """
    if bool(data) == bool(images and masks):
        raise ValueError("give either --data DIR_OR_PARQUET or both --images DIR and --masks DIR")
    if images:
        return folder_pairs(images, masks)
    if is_run(data):
        return run_pairs(data, read_classes(classes), min_confidence=min_confidence)
    if data.rstrip("/").endswith(".parquet") or _has_parquet(data):
        return parquet_pairs(data, image_column=image_column, mask_column=mask_column)
    return folder_pairs(f"{data.rstrip('/')}/images", f"{data.rstrip('/')}/masks")


def _has_parquet(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.isdir(path) and bool(fs.glob(f"{path.rstrip('/')}/**/*.parquet"))
