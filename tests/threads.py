"""Calls from several threads at once, for the ``--actor-threads`` tests (unit and GPU).

A regular module (like ``fakes``) so unit and GPU tests import it by name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def run_together(call: Callable[[Any], Any], inputs: Sequence[Any], repeats: int = 1) -> list:
    """``[[call(x) repeats times] for x in inputs]``, one thread per input, all released at
    once by a barrier so that their calls overlap (and race for anything built lazily)."""
    barrier = threading.Barrier(len(inputs))

    def run(x: Any) -> list:
        barrier.wait()
        return [call(x) for _ in range(repeats)]

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(run, inputs))


def assert_same_predictions(got: Sequence, expected: Sequence, sums_rtol: float = 0.0) -> None:
    """Label maps, uint8 confidence and counts equal, image by image; confidence sums equal
    within ``sums_rtol`` (CUDA adds float64 sums with atomics, in no fixed order)."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.label_map, e.label_map)
        np.testing.assert_array_equal(g.confidence, e.confidence)
        np.testing.assert_array_equal(g.class_counts, e.class_counts)
        np.testing.assert_allclose(g.confidence_sums, e.confidence_sums, rtol=sums_rtol, atol=0)
