"""What people should look at: choose a review set from a labelling run's rows.

Every strategy reads only the per-image statistics the run already stores
(``class_pixel_counts``, ``present_classes``, ``present_mean_confidence``, see
:mod:`pipeline.schema`), so choosing never re-reads an image or runs a model:

* ``least-confident``: lowest mean confidence over the labelled pixels first
  (``sum(mean_c * pixels_c) / sum(pixels_c)``, the exact pixel-weighted mean); images with no
  labelled pixel come first.
* ``class-balanced``: rare classes first. Repeatedly take the class seen in the fewest chosen
  images (ties: fewest pool images, i.e. the rarest), then the remaining image with the most
  pixels of it (ties: the less confident).
* ``diverse``: k-centre greedy (farthest-first) over per-image embeddings, starting from the least
  confident image. The embedding is the image's class composition, the (C,) vector of pixel
  fractions per class. The run stores no image embeddings, and this vector costs nothing, while
  the two images it calls close are scenes the model *labelled* alike: what matters for the
  errors a person fixes. (CLIP image embeddings would separate appearance instead, but need every
  image decoded and encoded again.)
* ``random``: a seeded permutation (the baseline every strategy must beat).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema, storage, write

STAT_COLUMNS = [
    schema.IMAGE_ID,
    schema.STATUS,
    schema.CLASS_PIXEL_COUNTS,
    schema.PRESENT_CLASSES,
    schema.PRESENT_MEAN_CONFIDENCE,
]


@dataclass(frozen=True)
class Pool:
    """The run's ok images and their statistics.

    Attributes:
        ids: N image ids (sorted).
        pixels: (N, C) int64 pixels per class.
        confidence: (N,) float64 pixel-weighted mean confidence (0 with no labelled pixel).
    """

    ids: list[str]
    pixels: np.ndarray
    confidence: np.ndarray


def read_pool(run: str, num_classes: int) -> Pool:
    """Statistics of every ok row of a finished run."""
    table = write.read_labels(run, STAT_COLUMNS)
    table = table.filter(pc.equal(table[schema.STATUS], schema.STATUS_OK)).sort_by(schema.IMAGE_ID)
    rows = table.to_pylist()
    pixels = np.zeros((len(rows), num_classes), dtype=np.int64)
    confidence = np.zeros(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        pixels[i] = row[schema.CLASS_PIXEL_COUNTS]
        present = np.asarray(row[schema.PRESENT_CLASSES], dtype=np.int64)
        weights = pixels[i, present]
        if weights.sum() > 0:
            mean = np.asarray(row[schema.PRESENT_MEAN_CONFIDENCE], dtype=np.float64)
            confidence[i] = float((mean * weights).sum() / weights.sum())
    return Pool([r[schema.IMAGE_ID] for r in rows], pixels, confidence)


def without(pool: Pool, ids: set[str]) -> Pool:
    """The pool minus ``ids`` (images already reviewed)."""
    keep = [i for i, image_id in enumerate(pool.ids) if image_id not in ids]
    return Pool([pool.ids[i] for i in keep], pool.pixels[keep], pool.confidence[keep])


def least_confident(pool: Pool, budget: int, seed: int = 0) -> list[int]:
    """Indices, lowest mean confidence first (stable: ties keep id order)."""
    return np.argsort(pool.confidence, kind="stable")[:budget].tolist()


def class_balanced(pool: Pool, budget: int, seed: int = 0) -> list[int]:
    """Indices covering rare classes first (see the module docstring)."""
    has = pool.pixels > 0  # (N, C)
    frequency = has.sum(0)
    chosen_per_class = np.zeros(pool.pixels.shape[1], dtype=np.int64)
    left = np.ones(len(pool.ids), dtype=bool)
    out: list[int] = []
    while len(out) < min(budget, len(pool.ids)):
        available = (has & left[:, None]).any(0)
        if not available.any():  # only images without labelled pixels remain
            out += [i for i in least_confident(pool, len(pool.ids)) if left[i]][: budget - len(out)]
            break
        classes = np.flatnonzero(available)
        c = classes[np.lexsort((frequency[classes], chosen_per_class[classes]))[0]]
        candidates = np.flatnonzero(left & has[:, c])
        best = candidates[np.lexsort((pool.confidence[candidates], -pool.pixels[candidates, c]))[0]]
        out.append(int(best))
        left[best] = False
        chosen_per_class += has[best]
    return out


def composition(pool: Pool) -> np.ndarray:
    """(N, C) float64 pixel fractions per class: the embedding ``diverse`` uses."""
    totals = pool.pixels.sum(1, keepdims=True)
    return pool.pixels / np.maximum(totals, 1)


def k_centre(embeddings: np.ndarray, budget: int, first: int) -> list[int]:
    """Farthest-first traversal: each pick maximises its distance to the picks so far.

    Args:
        embeddings: (N, D) float.
        first: index of the first centre.
    """
    out = [first]
    distance = np.linalg.norm(embeddings - embeddings[first], axis=1)
    distance[first] = -1.0  # chosen: never again, even when every distance left is 0
    while len(out) < min(budget, len(embeddings)):
        nxt = int(np.argmax(distance))
        out.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(embeddings - embeddings[nxt], axis=1))
        distance[out] = -1.0
    return out


def diverse(pool: Pool, budget: int, seed: int = 0) -> list[int]:
    """k-centre greedy on class composition, from the least confident image."""
    if budget <= 0 or not pool.ids:
        return []
    return k_centre(composition(pool), budget, least_confident(pool, 1)[0])


def random(pool: Pool, budget: int, seed: int = 0) -> list[int]:
    """A seeded random choice."""
    return np.random.default_rng(seed).permutation(len(pool.ids))[:budget].tolist()


STRATEGIES: dict[str, Callable[[Pool, int, int], list[int]]] = {
    "least-confident": least_confident,
    "class-balanced": class_balanced,
    "diverse": diverse,
    "random": random,
}


def write_subset(run: str, out: str, ids: Sequence[str], selection: dict) -> None:
    """A finished run holding only the rows of ``ids`` (one part), readable like any run.

    ``run.json`` is the source run's, plus ``selection`` (strategy, budget, source run, ids).
    """
    wanted = set(ids)
    source = json.loads(storage.read_bytes(storage.join(run, write.RUN_FILE)))
    table = write.read_labels(run)
    table = table.filter(pa.array([i in wanted for i in table[schema.IMAGE_ID].to_pylist()]))
    part = write.part_name(table[schema.IMAGE_ID].to_pylist())
    num_classes = len(source["vocabulary"])
    sources = {s: 0 for s in table[schema.SHARD_ID].to_pylist()}
    marker = {"part": part, "fingerprint": source.get("fingerprint")}
    marker.update(write.part_marker(table, sources, num_classes))
    write.write_part_files(out, part, table, marker)
    write.write_run_file(out, {**source, "selection": selection})
