"""zegclip.train.metrics against hand-computed confusion matrices (mmseg definitions)."""

from __future__ import annotations

import math

import numpy as np

from zegclip.train.metrics import compute_metrics, confusion_matrix, format_table, harmonic_mean

GT = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])


def test_confusion_matrix_excludes_ignore_and_counts_pairs():
    conf = confusion_matrix(GT, PRED, 4)
    expected = np.zeros((4, 5), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = 1  # gt 0 -> pred 0, pred 1
    expected[1, 1] = 2
    expected[2, 0] = 1
    np.testing.assert_array_equal(conf, expected)


def test_iou_accuracy_and_nan_for_absent_classes():
    m = compute_metrics(confusion_matrix(GT, PRED, 4), seen=np.array([1, 1, 0, 0], bool))
    # IoU0 = 1 / (2 + 2 - 1), IoU1 = 2 / (2 + 3 - 2), IoU2 = 0 / 1, class 3 absent everywhere.
    np.testing.assert_allclose(m.iou[:3], [1 / 3, 2 / 3, 0.0])
    assert math.isnan(m.iou[3]) and math.isnan(m.acc[3])
    np.testing.assert_allclose(m.acc[:3], [0.5, 1.0, 0.0])
    assert m.pixel_acc == 3 / 5
    assert math.isclose(m.miou, 1 / 3)
    assert math.isclose(m.miou_seen, 0.5)
    assert m.miou_unseen == 0.0 and m.hiou == 0.0


def test_predicted_but_absent_class_has_zero_iou_and_counts_in_mean():
    gt = np.array([[0, 0]])
    pred = np.array([[0, 1]])
    m = compute_metrics(confusion_matrix(gt, pred, 2))
    np.testing.assert_allclose(m.iou, [0.5, 0.0])
    assert m.miou == 0.25


def test_unlabelled_predictions_are_misses_not_false_positives():
    gt = np.array([[0, 1, 1]])
    pred = np.array([[0, 255, 1]])
    conf = confusion_matrix(gt, pred, 2)
    assert conf[1, 2] == 1
    m = compute_metrics(conf)
    np.testing.assert_allclose(m.iou, [1.0, 0.5])
    assert math.isclose(m.pixel_acc, 2 / 3)


def test_hiou_and_table():
    assert math.isclose(harmonic_mean(0.8, 0.4), 2 * 0.8 * 0.4 / 1.2)
    assert math.isnan(harmonic_mean(0.5, float("nan")))
    m = compute_metrics(confusion_matrix(GT, PRED, 4), seen=np.array([1, 1, 0, 0], bool))
    table = format_table(m, ["a", "b", "c", "d"], np.array([1, 1, 0, 0], bool))
    assert "mIoU(S) 50.00" in table and "hIoU 0.00" in table
    assert m.as_dict(["a", "b", "c", "d"])["per_class"]["d"]["iou"] is None
