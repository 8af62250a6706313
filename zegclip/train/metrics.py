"""Semantic-segmentation metrics as mmseg computes them, plus the zero-shot seen/unseen split.

Pure numpy. The confusion matrix is accumulated over the whole data set; ignore pixels (255 in
the ground truth) are excluded. Predictions may contain an "unlabelled" value (>= C, e.g. 255 from
a score threshold): such pixels count against their ground-truth class (a miss) and for no class.

* IoU_c = TP_c / (GT_c + Pred_c - TP_c); NaN when class c is absent from both ground truth and
  prediction; means are NaN-means (mmseg ``nanmean``).
* Acc_c = TP_c / GT_c; pixel accuracy = sum TP / number of valid pixels (mmseg ``aAcc``).
* hIoU = 2 S U / (S + U) over the seen and unseen mIoU (ZegCLIP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zegclip.vocab import IGNORE_INDEX


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, *, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Pixel counts per (ground truth, prediction).

    Args:
        gt: (H, W) int ground truth ids; ``ignore_index`` and ids >= C are excluded.
        pred: (H, W) int predicted ids; ids outside [0, C) count as "unlabelled".
        num_classes: C.

    Returns:
        (C, C + 1) int64; the last column counts unlabelled predictions.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    gt, pred = gt[keep], pred[keep]
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


@dataclass
class SegMetrics:
    """Metrics over an accumulated confusion matrix (fractions in [0, 1], NaN = undefined).

    Attributes:
        iou / acc: (C,) per-class IoU and accuracy.
        pixel_acc: overall pixel accuracy.
        miou: mean IoU over all classes. miou_seen / miou_unseen / hiou: zero-shot summary
            (NaN when the split has no classes).
    """

    iou: np.ndarray
    acc: np.ndarray
    pixel_acc: float
    miou: float
    miou_seen: float
    miou_unseen: float
    hiou: float

    def as_dict(self, names: list[str]) -> dict:
        """JSON-ready dict (NaN -> None), percentages like mmseg's tables."""

        def pct(x: float) -> float | None:
            return None if np.isnan(x) else round(100 * float(x), 2)

        return {
            "pixel_acc": pct(self.pixel_acc),
            "miou": pct(self.miou),
            "miou_seen": pct(self.miou_seen),
            "miou_unseen": pct(self.miou_unseen),
            "hiou": pct(self.hiou),
            "per_class": {
                n: {"iou": pct(i), "acc": pct(a)} for n, i, a in zip(names, self.iou, self.acc)
            },
        }


def compute_metrics(conf: np.ndarray, seen: np.ndarray | None = None) -> SegMetrics:
    """Metrics from a (C, C + 1) confusion matrix.

    Args:
        conf: see :func:`confusion_matrix` ((C, C) is accepted too).
        seen: (C,) bool; None = every class seen.
    """
    c = conf.shape[0]
    conf = conf.astype(np.float64)
    tp = np.diag(conf[:, :c])
    gt_area = conf.sum(axis=1)
    pred_area = conf[:, :c].sum(axis=0)
    union = gt_area + pred_area - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt_area > 0, tp / gt_area, np.nan)
    total = gt_area.sum()
    seen = np.ones(c, dtype=bool) if seen is None else np.asarray(seen, dtype=bool)
    miou_seen, miou_unseen = _nanmean(iou[seen]), _nanmean(iou[~seen])
    hiou = harmonic_mean(miou_seen, miou_unseen)
    return SegMetrics(
        iou,
        acc,
        float(tp.sum() / total) if total else float("nan"),
        _nanmean(iou),
        miou_seen,
        miou_unseen,
        hiou,
    )


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b); NaN if either is NaN, 0 if both are 0."""
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def format_table(metrics: SegMetrics, names: list[str], seen: np.ndarray | None = None) -> str:
    """Per-class IoU/Acc table and the summary line, as text."""
    seen = np.ones(len(names), dtype=bool) if seen is None else seen
    width = max(12, *(len(n) for n in names))
    lines = [f"{'class':<{width}}  split    IoU    Acc"]
    for name, is_seen, iou, acc in zip(names, seen, metrics.iou, metrics.acc):
        lines.append(
            f"{name:<{width}}  {'seen  ' if is_seen else 'unseen'}"
            f" {100 * iou:6.2f} {100 * acc:6.2f}"
        )
    lines.append(
        f"pAcc {100 * metrics.pixel_acc:.2f}  mIoU {100 * metrics.miou:.2f}  "
        f"mIoU(S) {100 * metrics.miou_seen:.2f}  mIoU(U) {100 * metrics.miou_unseen:.2f}  "
        f"hIoU {100 * metrics.hiou:.2f}"
    )
    return "\n".join(lines)
