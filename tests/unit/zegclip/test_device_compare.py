"""The GPU tests' comparison code (``tests/device_compare.py``) run with CPU against CPU.

On a machine without CUDA this is what checks that ``tests/gpu/test_gpu_vs_cpu.py`` compares the
right things: every family builds, predicts on the pipeline's ``sizes`` path, and the same
device gives 100 % agreement; ``label_agreement`` counts differing pixels exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from content import label_agreement, same_size_photos
from device_compare import FAMILIES, compare_with_cpu
from tiny_models import TINY_CLIP


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Two same-size real photos and one of another size (size groups on the sizes path)."""
    return same_size_photos(2, (120, 160)) + same_size_photos(3, (90, 200))[2:]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_cpu_against_cpu_oracle_agrees_exactly(family, photos, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("ckpt")
    result = compare_with_cpu(family, TINY_CLIP, folder, photos, "cpu", "fp32")
    assert result == {"agreement": 1.0, "max_confidence_step": 0, "counts_equal": True}


def test_label_agreement_counts_differing_pixels() -> None:
    a = [np.zeros((4, 5), np.uint8), np.ones((2, 2), np.uint8)]
    b = [a[0].copy(), a[1].copy()]
    b[0][1, 2] = 7
    b[1][0, 0] = 255
    assert label_agreement(a, b) == pytest.approx(22 / 24)
    assert label_agreement(a, a) == 1.0
