"""Calibrating the "unlabelled" threshold against ground truth (numpy only).

A labelling run stores, per pixel, the chosen class and its confidence quantised to a level
``q = round(conf * 255)`` (the confidence PNG). Raising the threshold ``t`` turns pixels with
``conf < t`` into "unlabelled": fewer labels, hopefully more of them right. For each ``t`` this
module reports, over pixels with a valid ground-truth label:

* **precision**: correct labelled pixels / labelled pixels (NaN when nothing is labelled);
* **coverage**: labelled pixels / valid pixels;
* **mIoU**: mean over classes of TP / (GT + predicted - TP) (NaN-mean, as mmseg), where an
  unlabelled pixel is a miss for its ground-truth class but not a false positive for any class.

Counts are accumulated per (class, confidence level), so one pass over the data serves every
threshold. ``t`` keeps pixels with ``q >= ceil(255 * t)``, i.e. ``conf >= t`` up to the 1/510
quantisation of the stored confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEVELS = 256  # confidence levels in the run's uint8 confidence PNGs


@dataclass
class CalibrationCounts:
    """Pixel counts for a threshold sweep over ``num_classes`` classes.

    Attributes:
        tp: (C, 256) int64 correctly labelled pixels of class c at confidence level q.
        pred: (C, 256) int64 pixels labelled c at level q (on valid ground truth only).
        gt: (C,) int64 ground-truth pixels of class c.
    """

    num_classes: int
    tp: np.ndarray = field(init=False)
    pred: np.ndarray = field(init=False)
    gt: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.tp = np.zeros((self.num_classes, LEVELS), dtype=np.int64)
        self.pred = np.zeros((self.num_classes, LEVELS), dtype=np.int64)
        self.gt = np.zeros(self.num_classes, dtype=np.int64)

    def add(self, gt: np.ndarray, pred: np.ndarray, confidence: np.ndarray) -> None:
        """Accumulate one image.

        Args:
            gt: (H, W) int ground truth; values >= C (e.g. 255) are ignored.
            pred: (H, W) int predicted class ids; values >= C are unlabelled (or unknown names).
            confidence: (H, W) uint8 quantised confidence of the predicted class.
        """
        c = self.num_classes
        gt, pred = gt.astype(np.int64), pred.astype(np.int64)
        valid = (gt >= 0) & (gt < c)
        self.gt += np.bincount(gt[valid], minlength=c)[:c]
        labelled = valid & (pred >= 0) & (pred < c)
        index = pred[labelled] * LEVELS + confidence[labelled].astype(np.int64)
        self.pred += np.bincount(index, minlength=c * LEVELS).reshape(c, LEVELS)
        hit = labelled & (pred == gt)
        index = pred[hit] * LEVELS + confidence[hit].astype(np.int64)
        self.tp += np.bincount(index, minlength=c * LEVELS).reshape(c, LEVELS)


@dataclass(frozen=True)
class Sweep:
    """Metrics per threshold; every array is (T,) float64 aligned with ``thresholds``."""

    thresholds: np.ndarray
    precision: np.ndarray
    coverage: np.ndarray
    miou: np.ndarray

    def rows(self) -> list[dict[str, float]]:
        """One dict per threshold (JSON-friendly; NaN becomes None)."""
        keys = ("threshold", "precision", "coverage", "miou")
        cols = (self.thresholds, self.precision, self.coverage, self.miou)
        return [
            {k: (None if np.isnan(v) else round(float(v), 6)) for k, v in zip(keys, vals)}
            for vals in zip(*cols)
        ]


def level_for(threshold: float) -> int:
    """Lowest stored confidence level kept by ``threshold`` in [0, 1]."""
    return int(np.ceil(np.float64(threshold) * (LEVELS - 1) - 1e-9))


def _at_or_above(hist: np.ndarray) -> np.ndarray:
    """(C, 256) counts per level -> (C, 256) counts at that level or above."""
    return hist[:, ::-1].cumsum(axis=1)[:, ::-1]


def sweep(counts: CalibrationCounts, thresholds: np.ndarray) -> Sweep:
    """Precision, coverage and mIoU for each threshold in ``thresholds`` ((T,) in [0, 1])."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    levels = np.array([level_for(t) for t in thresholds])
    tp = _at_or_above(counts.tp)[:, levels]  # (C, T)
    pred = _at_or_above(counts.pred)[:, levels]
    gt = counts.gt[:, None]
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        precision = tp.sum(axis=0) / pred.sum(axis=0)
        coverage = pred.sum(axis=0) / counts.gt.sum()
    has_iou = ~np.isnan(iou)
    miou = np.where(
        has_iou.any(axis=0), np.nansum(iou, axis=0) / np.maximum(has_iou.sum(axis=0), 1), np.nan
    )
    return Sweep(thresholds, precision.astype(np.float64), coverage, miou)


def recommend(result: Sweep, target_precision: float) -> int | None:
    """Index of the lowest threshold whose precision reaches ``target_precision``.

    Coverage never grows with the threshold, so this is the threshold that keeps the most labels
    at the target precision. None when no threshold reaches it.
    """
    ok = np.flatnonzero(np.nan_to_num(result.precision, nan=-1.0) >= target_precision)
    return int(ok[0]) if ok.size else None


def format_sweep(result: Sweep, recommended: int | None = None) -> str:
    """Plain-text table: threshold, precision, coverage, mIoU (percent); ``*`` marks the pick."""
    lines = [f"{'threshold':>9}  {'precision':>9}  {'coverage':>8}  {'mIoU':>6}"]

    def pct(x: float) -> str:
        return "   n/a" if np.isnan(x) else f"{100 * x:6.2f}"

    for i, t in enumerate(result.thresholds):
        mark = "  *" if i == recommended else ""
        lines.append(
            f"{t:9.3f}  {pct(result.precision[i]):>9}  {pct(result.coverage[i]):>8}  "
            f"{pct(result.miou[i])}{mark}"
        )
    return "\n".join(lines)


def pixel_outcomes(conf: np.ndarray) -> dict[str, int]:
    """Split valid ground-truth pixels of a (C, C+1) confusion matrix (last column: unlabelled
    or unknown class) into ``correct``, ``wrong`` and ``unlabelled`` counts."""
    c = conf.shape[0]
    correct = int(np.trace(conf[:, :c]))
    return {
        "correct": correct,
        "wrong": int(conf[:, :c].sum()) - correct,
        "unlabelled": int(conf[:, c:].sum()),
    }
