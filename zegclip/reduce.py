"""Stitched row scores -> best class and its score at the original image size, on the scores'
device, a chunk of rows at a time.

The old host path resized every row to the original size, activated them, max-reduced synonyms
into a (C + 1, H, W) tensor and took the argmax: memory grew with C x H x W (171 classes on a
4000x3000 photo: 8 GB). Here rows are resized, activated and reduced ``chunk`` rows at a time
with a running max/argmax, so at most ``max_elements`` full-size values live at once.

Exactness: rows are sorted by class (background rows last, as class ``C``), so the first
maximal row of a chunk belongs to the lowest tied class, and a later chunk replaces the running
best only when strictly greater. That is the old rule, ``argmax`` over per-class synonym maxima
with ties to the lowest class. A softmax over all rows (training-free family) is chunked with a
first pass that gathers the per-pixel max and sum of exponentials (online softmax) and a second
that divides; with a single chunk the scorer's own :meth:`~DenseScorer.activate` is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

# Full-resolution values per chunk: 2**26 float32 = 256 MiB (a 360x480 photo: 388 rows, i.e.
# every vocabulary in one chunk; a 4000x3000 photo: 5 rows per chunk).
DEFAULT_MAX_ELEMENTS = 2**26

Activation = Callable[[torch.Tensor], torch.Tensor]


def row_chunks(num_rows: int, height: int, width: int, max_elements: int) -> list[slice]:
    """Consecutive row slices with at most ``max_elements`` values at (height, width) each."""
    step = max(1, max_elements // max(1, height * width))
    return [slice(s, min(s + step, num_rows)) for s in range(0, num_rows, step)]


def upsample(rows: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w) -> (N, K, H, W) bilinear, ``align_corners=False`` (the official resize)."""
    return F.interpolate(rows, size=size, mode="bilinear", align_corners=False)


def best_rows(
    scores: torch.Tensor,
    index: torch.Tensor,
    size: tuple[int, int],
    *,
    activate: Activation,
    softmax_scale: float | None = None,
    max_elements: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best class per pixel at ``size`` and its activated score, for a batch of images.

    Args:
        scores: (N, S, h, w) float32 stitched (and refined) scores, rows sorted by ``index``.
        index: (S,) int64 nondecreasing class of each row (background rows = C), same device.
        size: (H, W) original image size.
        activate: the scorer's activation; row-wise unless ``softmax_scale`` is set.
        softmax_scale: when set, ``activate`` is ``softmax(softmax_scale * rows)`` over all rows.
        max_elements: bound on full-size values per chunk, N x rows x H x W (see
            :data:`DEFAULT_MAX_ELEMENTS`; at least one row of all N images).

    Returns:
        ``best`` (N, H, W) float32 score of the winning row, ``label`` (N, H, W) int64 its class.
    """
    n, num_rows = scores.shape[:2]
    chunks = row_chunks(num_rows, n * size[0], size[1], max_elements)
    best = label = None
    for rows, values in _activated(scores, size, chunks, activate, softmax_scale):
        value, row = values.max(dim=1)
        cls = index[rows][row]
        if best is None:
            best, label = value, cls
            continue
        better = value > best
        best = torch.where(better, value, best)
        label = torch.where(better, cls, label)
    return best, label


def _activated(
    scores: torch.Tensor,
    size: tuple[int, int],
    chunks: list[slice],
    activate: Activation,
    softmax_scale: float | None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, (N, K, H, W) activated values) per chunk."""
    if softmax_scale is None or len(chunks) == 1:
        for rows in chunks:
            yield rows, activate(upsample(scores[:, rows], size))
        return
    peak, denominator = _softmax_normaliser(scores, size, chunks, softmax_scale)
    for rows in chunks:
        logits = softmax_scale * upsample(scores[:, rows], size)
        yield rows, logits.sub_(peak).exp_().div_(denominator)


def _softmax_normaliser(
    scores: torch.Tensor, size: tuple[int, int], chunks: list[slice], scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, H, W) per-pixel max and sum of ``exp(logit - max)`` over all rows, by chunks."""
    peak = denominator = None
    for rows in chunks:
        logits = scale * upsample(scores[:, rows], size)
        chunk_peak = logits.amax(dim=1, keepdim=True)
        if peak is None:
            peak, denominator = chunk_peak, (logits - chunk_peak).exp_().sum(dim=1, keepdim=True)
            continue
        new_peak = torch.maximum(peak, chunk_peak)
        denominator = denominator * (peak - new_peak).exp_() + (logits - new_peak).exp_().sum(
            1, True
        )
        peak = new_peak
    return peak, denominator
