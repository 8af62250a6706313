"""Sliding-window stitching for a whole batch: which crops share a forward, and where they add.

Images of one prepared size share their windows, so their crops are taken window by window for
all images at once (window-major): a forward chunk of up to ``max_crops`` crops is then a few
runs of consecutive images under one window, and each run is one slice of the crop batch added
into one slice of the (N, S, h, w) total. The number of tensor operations per batch depends on
the windows and chunks, not on the number of images. Each image still receives its windows in
window order, so the float sums equal the per-image loop's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

Window = tuple[int, int, int, int]  # (y1, y2, x1, x2)


class Run(NamedTuple):
    """Images ``start:stop`` of group ``group`` under window ``window``."""

    group: int
    window: Window
    start: int
    stop: int

    @property
    def crop_shape(self) -> tuple[int, int]:
        """(height, width) of the window."""
        y1, y2, x1, x2 = self.window
        return y2 - y1, x2 - x1


def plan_chunks(
    windows: Sequence[Sequence[Window]], sizes: Sequence[int], max_crops: int
) -> list[list[Run]]:
    """Forward chunks of at most ``max_crops`` same-shape crops, window-major within a group.

    Args:
        windows: per group, its sliding windows (every image of a group has the same ones).
        sizes: per group, its number of images.
        max_crops: crops per forward.

    Returns:
        Chunks in order; each is a list of runs whose crops have one shape and add up to at
        most ``max_crops``. Groups with the same crop shape share chunks.
    """
    by_shape: dict[tuple[int, int], list[Run]] = {}
    for group, (wins, n) in enumerate(zip(windows, sizes, strict=True)):
        for window in wins:
            run = Run(group, tuple(window), 0, n)
            by_shape.setdefault(run.crop_shape, []).append(run)
    chunks: list[list[Run]] = []
    for runs in by_shape.values():
        chunks.extend(_fill(runs, max_crops))
    return chunks


def _fill(runs: list[Run], max_crops: int) -> list[list[Run]]:
    """Split ``runs`` into consecutive chunks of at most ``max_crops`` crops."""
    chunks: list[list[Run]] = []
    current: list[Run] = []
    room = max_crops
    for run in runs:
        start = run.start
        while start < run.stop:
            take = min(room, run.stop - start)
            current.append(run._replace(start=start, stop=start + take))
            start, room = start + take, room - take
            if room == 0:
                chunks.append(current)
                current, room = [], max_crops
    if current:
        chunks.append(current)
    return chunks


def gather_crops(images: Sequence[torch.Tensor], chunk: list[Run]) -> torch.Tensor:
    """(B, 3, h, w) crops of one chunk, in run order, from per-group (N, 3, H, W) images."""
    crops = [
        images[r.group][r.start : r.stop, :, r.window[0] : r.window[1], r.window[2] : r.window[3]]
        for r in chunk
    ]
    return crops[0] if len(crops) == 1 else torch.cat(crops)


def add_crops(totals: Sequence[torch.Tensor], chunk: list[Run], scores: torch.Tensor) -> None:
    """Add a chunk's (B, S, h, w) crop scores into the per-group (N, S, H, W) totals."""
    offset = 0
    for r in chunk:
        n = r.stop - r.start
        y1, y2, x1, x2 = r.window
        totals[r.group][r.start : r.stop, :, y1:y2, x1:x2] += scores[offset : offset + n]
        offset += n


def coverage(height: int, width: int, windows: Sequence[Window]) -> torch.Tensor:
    """(height, width) float32 number of windows covering each pixel (CPU)."""
    count = torch.zeros((height, width), dtype=torch.float32)
    for y1, y2, x1, x2 in windows:
        count[y1:y2, x1:x2] += 1
    return count
