"""Image/mask training and evaluation data from local paths or object storage (fsspec).

Sources:

* a folder with ``images/`` and ``masks/`` holding files with the same stems, or any two folders
  (CamVid's ``train/`` + ``trainannot/``);
* a Parquet file (or a folder of them) with an image column and a mask column, each either raw
  encoded bytes or a Hugging Face ``Image`` struct ``{bytes, path}``.

Masks hold class ids in the order of the classes file; 255 and any id >= the number of classes
are ignored (CamVid's void 11 included). ``reduce_zero_label`` maps 0 to ignore and shifts the
rest down by one (mmseg). Pairs that cannot be decoded or whose sizes differ are logged, counted
and skipped: :class:`PairError` is raised per item and the caller moves on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

import cv2
import fsspec
import numpy as np

from zegclip.vocab import IGNORE_INDEX

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Added to a class id where a pair's label is a model's (pseudo-label), not a person's. Only
# masks of pairs flagged ``provenance`` carry it (uint16 PNG); see :func:`load_pair`.
MACHINE = 256


class PairError(ValueError):
    """One image/mask pair is unusable (unreadable, wrong shape, size mismatch)."""


@dataclass(frozen=True)
class SegPair:
    """Where one pair lives: URIs/paths, or in-memory encoded bytes (Parquet rows).

    Attributes:
        name: file stem, used to match predictions to ground truth.
        provenance: the mask is uint16 with :data:`MACHINE` added to machine-labelled ids.
    """

    name: str
    image: str | bytes
    mask: str | bytes
    provenance: bool = False


def _stem(path: str) -> str:
    return PurePosixPath(path.split("#", 1)[0]).stem


def _list_files(root: str) -> dict[str, str]:
    """stem -> full URI of the image-like files directly under ``root``."""
    fs, path = fsspec.core.url_to_fs(root)
    out = {}
    for entry in sorted(fs.ls(path, detail=False)):
        if entry.lower().endswith(IMAGE_SUFFIXES):
            out[_stem(entry)] = fs.unstrip_protocol(entry) if "://" in root else entry
    return out


def folder_pairs(images: str, masks: str) -> list[SegPair]:
    """Pairs of same-stem files in two folders (local or fsspec URIs), sorted by stem.

    Raises:
        FileNotFoundError: no pair found.
    """
    image_files, mask_files = _list_files(images), _list_files(masks)
    missing = sorted(set(image_files) - set(mask_files))
    if missing:
        logger.warning("%d images have no mask (e.g. %s); skipped", len(missing), missing[:3])
    pairs = [
        SegPair(s, image_files[s], mask_files[s]) for s in sorted(image_files) if s in mask_files
    ]
    if not pairs:
        raise FileNotFoundError(f"no image/mask pairs with matching stems in {images} and {masks}")
    return pairs


def _cell_bytes(value) -> bytes | None:
    if isinstance(value, dict):
        return value.get("bytes")
    return value


def parquet_pairs(
    uri: str,
    *,
    image_column: str = "image",
    mask_column: str = "mask",
    name_column: str | None = None,
) -> list[SegPair]:
    """Pairs from Parquet rows (one file or every ``*.parquet`` under a folder).

    Raises:
        FileNotFoundError: no Parquet file. KeyError: a column is missing.
    """
    import pyarrow.parquet as pq  # only this source needs pyarrow

    fs, path = fsspec.core.url_to_fs(uri)
    files = [path] if fs.isfile(path) else sorted(fs.glob(f"{path.rstrip('/')}/**/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files at {uri}")
    pairs = []
    for file in files:
        with fs.open(file, "rb") as f:
            table = pq.read_table(f)
        for col in (image_column, mask_column):
            if col not in table.column_names:
                raise KeyError(f"{file}: column '{col}' not found ({table.column_names})")
        rows = table.to_pylist()
        for i, row in enumerate(rows):
            name = str(row[name_column]) if name_column else f"{_stem(file)}-{i:06d}"
            pairs.append(
                SegPair(name, _cell_bytes(row[image_column]), _cell_bytes(row[mask_column]))
            )
    return pairs


def _read_bytes(ref: str | bytes | None) -> bytes:
    if ref is None:
        raise PairError("empty cell")
    if isinstance(ref, bytes):
        return ref
    with fsspec.open(ref, "rb") as f:
        return f.read()


def _decode(data: bytes, flags: int) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if array is None:
        raise PairError("undecodable image bytes")
    return array


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 RGB."""
    return cv2.cvtColor(_decode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def decode_mask(data: bytes) -> np.ndarray:
    """Encoded single-channel PNG -> (H, W) uint8 or uint16 label ids, unchanged."""
    mask = _decode(data, cv2.IMREAD_UNCHANGED)
    if mask.ndim != 2:
        raise PairError(f"mask must be single-channel, got shape {mask.shape}")
    return mask


def map_labels(
    mask: np.ndarray, num_classes: int, *, reduce_zero_label: bool = False
) -> np.ndarray:
    """Raw mask ids -> (H, W) uint8 ids in [0, num_classes) or 255."""
    ids = mask.astype(np.int64)
    if reduce_zero_label:
        ids = np.where(ids == 0, IGNORE_INDEX, ids - 1)
    ids[(ids < 0) | (ids >= num_classes)] = IGNORE_INDEX
    return ids.astype(np.uint8)


def load_pair(
    pair: SegPair,
    num_classes: int,
    *,
    reduce_zero_label: bool = False,
    keep_provenance: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read and decode one pair.

    Args:
        keep_provenance: for a ``provenance`` pair, return (H, W) uint16 labels with
            :data:`MACHINE` added to machine-labelled pixels (training); otherwise the mark is
            dropped.

    Returns:
        image (H, W, 3) uint8 RGB and labels (H, W) uint8 (255 = ignore), or uint16 (above).

    Raises:
        PairError: unreadable or size mismatch.
    """
    try:
        image = decode_image(_read_bytes(pair.image))
        mask = decode_mask(_read_bytes(pair.mask))
    except (OSError, cv2.error) as e:
        raise PairError(f"{type(e).__name__}: {e}") from e
    if image.shape[:2] != mask.shape:
        raise PairError(f"image {image.shape[:2]} and mask {mask.shape} sizes differ")
    machine = None
    if pair.provenance:
        machine = (mask >= MACHINE) & (mask != 65535)
        mask = np.where(machine, mask - MACHINE, mask)
    labels = map_labels(mask, num_classes, reduce_zero_label=reduce_zero_label)
    if machine is not None and keep_provenance:
        labels = labels.astype(np.uint16)
        labels[machine & (labels != IGNORE_INDEX)] += MACHINE
    return image, labels


class PairSource:
    """Indexable pairs with bad-pair bookkeeping.

    Args:
        pairs: the pairs.
        num_classes: C of the classes file.
        reduce_zero_label: see :func:`map_labels`.
        keep_provenance: see :func:`load_pair` (training with ``--pseudo-weight``).
    """

    def __init__(
        self,
        pairs: list[SegPair],
        num_classes: int,
        *,
        reduce_zero_label: bool = False,
        keep_provenance: bool = False,
    ):
        if not pairs:
            raise ValueError("no image/mask pairs")
        self.pairs = pairs
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        self.keep_provenance = keep_provenance
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The pair at ``index``, or None (logged and counted once) when it is unusable."""
        if index in self.bad:
            return None
        pair = self.pairs[index]
        try:
            return load_pair(
                pair,
                self.num_classes,
                reduce_zero_label=self.reduce_zero_label,
                keep_provenance=self.keep_provenance,
            )
        except PairError as e:
            self.bad.add(index)
            logger.warning("skipping pair %s (%d bad so far): %s", pair.name, len(self.bad), e)
            return None


def encode_png(array: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) RGB uint8 array -> PNG bytes (tests and tools)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
