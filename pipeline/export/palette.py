"""The Pascal VOC colour map, used where a tool stores classes as colours (CVAT, Label Studio)."""

from __future__ import annotations

import numpy as np


def voc_colormap(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB colours of VOC indices 0..n-1 (index 0 is black).

    The bit-interleaving rule of the VOC development kit's ``labelcolormap.m``.
    """
    colours = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[i] = (r, g, b)
    return colours


def class_colours(num_classes: int) -> np.ndarray:
    """(C, 3) uint8 colours of export classes: VOC colours 1..C, so black stays background."""
    return voc_colormap(num_classes + 1)[1:]


def to_hex(colour: np.ndarray) -> str:
    """(3,) uint8 RGB -> ``#rrggbb``."""
    return "#" + "".join(f"{int(v):02x}" for v in colour)
