"""PNG encoding and per-class statistics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline import encode, schema


def _prediction(labels: np.ndarray, conf: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(label_map=labels, confidence=conf, class_counts=None)


def test_uint8_label_map_round_trips_and_counts_sum_to_labelled_pixels() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(37, 53), dtype=np.uint8)
    labels[:3, :4] = 255  # unlabelled
    conf = rng.random((37, 53), dtype=np.float32)
    out = encode.encode_prediction(
        _prediction(labels, conf), num_classes=5, image_id="a/b/img_1.jpg", size=(53, 37)
    )
    mask = encode.decode_png(out[schema.MASK]["bytes"])
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, labels)
    counts = np.asarray(out[schema.CLASS_PIXEL_COUNTS])
    assert counts.sum() == 37 * 53 - 12
    np.testing.assert_array_equal(counts, np.bincount(labels[labels < 5], minlength=5))
    assert out[schema.PRESENT_CLASSES] == [0, 1, 2, 3, 4]
    assert out[schema.MASK]["path"] == "a/b/img_1.png"
    q = encode.decode_png(out[schema.CONFIDENCE]["bytes"])
    np.testing.assert_array_equal(q, np.rint(conf * 255).astype(np.uint8))
    c2 = labels == 2
    assert out[schema.PRESENT_MEAN_CONFIDENCE][2] == pytest.approx(conf[c2].mean(), rel=1e-5)


def test_more_than_255_classes_uses_uint16_with_65535_unlabelled() -> None:
    labels = np.array([[0, 299, 65535], [256, 1, 1]], dtype=np.uint16)
    conf = np.full((2, 3), 0.5, dtype=np.float32)
    out = encode.encode_prediction(
        _prediction(labels, conf), num_classes=300, image_id="x", size=(3, 2)
    )
    mask = encode.decode_png(out[schema.MASK]["bytes"])
    assert mask.dtype == np.uint16
    np.testing.assert_array_equal(mask, labels)
    assert sum(out[schema.CLASS_PIXEL_COUNTS]) == 5
    assert out[schema.PRESENT_CLASSES] == [0, 1, 256, 299]


def test_uint16_input_with_few_classes_is_narrowed_to_uint8() -> None:
    labels = np.array([[0, 65535], [2, 1]], dtype=np.uint16)
    out = encode.normalise_labels(labels, num_classes=3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 255], [2, 1]])


def test_out_of_range_label_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside 0..2"):
        encode.normalise_labels(np.array([[0, 7]], dtype=np.uint8), num_classes=3)


def test_shape_mismatch_is_rejected() -> None:
    pred = _prediction(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="do not match"):
        encode.encode_prediction(pred, num_classes=2, image_id="x", size=(5, 4))


def test_confidence_quantisation_clips_and_rounds() -> None:
    q = encode.quantise_confidence(np.array([-0.2, 0.0, 0.5, 0.999, 1.7]))
    np.testing.assert_array_equal(q, [0, 0, 128, 255, 255])


def test_pre_quantised_confidence_with_sums_encodes_like_the_float_map() -> None:
    """A device predictor's uint8 confidence + per-class sums give the same row as the float."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=(41, 29), dtype=np.uint8)
    labels[5:9, :] = 255
    conf = rng.random((41, 29), dtype=np.float32)
    keep = labels < 4
    sums = np.bincount(labels[keep], weights=conf[keep].astype(np.float64), minlength=4)
    quantised = SimpleNamespace(
        label_map=labels,
        confidence=np.rint(conf * 255).astype(np.uint8),
        class_counts=None,
        confidence_sums=sums,
    )
    args = dict(num_classes=4, image_id="x.jpg", size=(29, 41))
    assert encode.encode_prediction(quantised, **args) == encode.encode_prediction(
        _prediction(labels, conf), **args
    )
    with pytest.raises(ValueError, match="confidence_sums"):
        encode.encode_prediction(_prediction(labels, quantised.confidence), **args)
    shipped = SimpleNamespace(**{**vars(quantised), "class_counts": np.bincount(labels[keep])})
    assert encode.encode_prediction(shipped, **args) == encode.encode_prediction(quantised, **args)


def test_the_device_counts_are_used_as_shipped() -> None:
    """The encode stage does not recount a device prediction's label map (issue 23)."""
    labels = np.array([[0, 1], [1, 255]], dtype=np.uint8)
    device = SimpleNamespace(
        label_map=labels,
        confidence=np.full((2, 2), 200, dtype=np.uint8),
        class_counts=np.array([1, 2, 0], dtype=np.int64),
        confidence_sums=np.array([0.5, 1.5, 0.0]),
    )
    out = encode.encode_prediction(device, num_classes=3, image_id="x.jpg", size=(2, 2))
    assert out[schema.CLASS_PIXEL_COUNTS] == [1, 2, 0]
    assert out[schema.PRESENT_MEAN_CONFIDENCE] == [0.5, 0.75]
    device.class_counts = np.array([0, 2, 1], dtype=np.int64)  # what a recount could not give
    out = encode.encode_prediction(device, num_classes=3, image_id="x.jpg", size=(2, 2))
    assert out[schema.PRESENT_CLASSES] == [1, 2]
