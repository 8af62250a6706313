"""``zegclip.train.calibration``: threshold sweep on a synthetic case with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from zegclip.train.calibration import (
    CalibrationCounts,
    format_sweep,
    level_for,
    pixel_outcomes,
    recommend,
    sweep,
)


def _image() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three confidence bands of 100 valid pixels each, correct 50 / 80 / 100 times, plus 20
    ignored pixels (gt 255) and 40 pixels the model left unlabelled (pred 255).

    Precision is 230/300 at t <= 0.2, 180/200 = 0.9 for 0.2 < t <= 0.5 and 1.0 up to 0.8.
    """
    gt, pred, conf = [], [], []
    for level, correct in ((51, 50), (128, 80), (204, 100)):  # 0.2, ~0.5, 0.8
        gt += [0] * 100
        pred += [0] * correct + [1] * (100 - correct)
        conf += [level] * 100
    gt += [255] * 20 + [1] * 40
    pred += [0] * 20 + [255] * 40
    conf += [255] * 20 + [0] * 40
    shape = (1, len(gt))
    return (
        np.array(gt, np.uint8).reshape(shape),
        np.array(pred, np.uint8).reshape(shape),
        np.array(conf, np.uint8).reshape(shape),
    )


def test_sweep_finds_the_known_threshold() -> None:
    counts = CalibrationCounts(2)
    counts.add(*_image())
    thresholds = np.round(np.arange(0, 1.0001, 0.05), 2)
    result = sweep(counts, thresholds)
    at = {float(t): i for i, t in enumerate(thresholds)}
    np.testing.assert_allclose(result.precision[at[0.0]], 230 / 300)
    np.testing.assert_allclose(result.precision[at[0.2]], 230 / 300)  # conf 0.2 is kept at 0.2
    np.testing.assert_allclose(result.precision[at[0.25]], 0.9)
    np.testing.assert_allclose(result.precision[at[0.8]], 1.0)
    assert np.isnan(result.precision[at[0.85]])  # nothing labelled
    np.testing.assert_allclose(result.coverage[at[0.0]], 300 / 340)
    np.testing.assert_allclose(result.coverage[at[0.25]], 200 / 340)
    assert np.all(np.diff(result.coverage) <= 0)
    # t = 0.25: class 0 TP 180, GT 300, pred 180 -> 0.6; class 1 TP 0, GT 40, pred 20 -> 0
    np.testing.assert_allclose(result.miou[at[0.25]], 0.3)
    assert recommend(result, 0.9) == at[0.25]
    assert recommend(result, 0.95) == at[0.55]
    assert recommend(result, 1.01) is None
    table = format_sweep(result, at[0.25])
    assert table.splitlines()[at[0.25] + 1].endswith("*") and "n/a" in table


def test_counts_add_up_over_images_and_levels() -> None:
    rng = np.random.default_rng(0)
    counts = CalibrationCounts(3)
    gt = rng.integers(0, 4, size=(2, 16, 16))  # 3 = ignored
    pred = rng.integers(0, 4, size=(2, 16, 16))  # 3 = unlabelled
    conf = rng.integers(0, 256, size=(2, 16, 16)).astype(np.uint8)
    for i in range(2):
        counts.add(gt[i], pred[i], conf[i])
    valid = gt < 3
    assert counts.gt.sum() == valid.sum()
    assert counts.pred.sum() == (valid & (pred < 3)).sum()
    assert counts.tp.sum() == (valid & (pred == gt)).sum()
    full = sweep(counts, np.array([0.0]))
    np.testing.assert_allclose(full.precision[0], counts.tp.sum() / counts.pred.sum())


@pytest.mark.parametrize(("t", "level"), [(0.0, 0), (0.2, 51), (0.5, 128), (1.0, 255)])
def test_level_for(t: float, level: int) -> None:
    assert level_for(t) == level


def test_pixel_outcomes_keeps_unlabelled_apart_from_wrong() -> None:
    conf = np.array([[5, 1, 2], [3, 7, 4]])
    assert pixel_outcomes(conf) == {"correct": 12, "wrong": 4, "unlabelled": 6}
