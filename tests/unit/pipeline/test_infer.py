"""SegmentationActor then the CPU encode stage, with the colour-threshold predictor; no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import decode, encode, encode_stage, schema
from pipeline.infer import SegmentationActor


def _decoded_batch() -> dict[str, np.ndarray]:
    red = np.zeros((6, 8, 3), np.uint8)
    red[..., 0] = 200
    red[:2, :] = (0, 0, 250)  # two blue rows
    red[5, 7] = (5, 5, 5)  # one dark (unlabelled) pixel
    green = np.zeros((3, 4, 3), np.uint8)
    green[..., 1] = 180
    images = np.empty(3, dtype=object)
    images[:] = [red, decode.EMPTY_IMAGE, green]
    return {
        schema.IMAGE_ID: np.array(["r.png", "bad.jpg", "g.png"], dtype=object),
        schema.SOURCE_URI: np.array(["s3://b/r.png", "s3://b/bad.jpg", "s3://b/g.png"], object),
        schema.SHARD_ID: np.array(["s0", "s0", "s0"], dtype=object),
        schema.SHARD_SIZE: np.array([3, 3, 3], dtype=np.int64),
        schema.IMAGE: images,
        schema.WIDTH: np.array([8, -1, 4], dtype=np.int32),
        schema.HEIGHT: np.array([6, -1, 3], dtype=np.int32),
        schema.STATUS: np.array(["ok", "error", "ok"], dtype=object),
        schema.ERROR: np.array([None, "OSError: truncated", None], dtype=object),
    }


def _rows(actor: SegmentationActor, batch: dict[str, np.ndarray]) -> list[dict]:
    """Actor output (raw predictions) through the encode stage, as Ray would pass it."""
    raw = actor(batch)
    assert raw.schema == schema.PREDICTION_SCHEMA
    table = encode_stage.encode_batch(raw.to_pydict(), num_classes=3)
    assert table.schema == schema.STREAM_SCHEMA
    return table.to_pylist()


def test_actor_builds_predictor_once_and_encodes_rows(colour_factory) -> None:
    built = []

    def factory(emb):
        built.append(emb.shape)
        return colour_factory(emb)

    actor = SegmentationActor(factory, np.eye(3, 8, dtype=np.float32), num_classes=3)
    rows = _rows(actor, _decoded_batch())
    actor(_decoded_batch())
    assert built == [(3, 8)]
    assert [r[schema.STATUS] for r in rows] == ["ok", "error", "ok"]
    r = rows[0]
    mask = encode.decode_png(r[schema.MASK]["bytes"])
    assert mask.shape == (6, 8)
    assert r[schema.CLASS_PIXEL_COUNTS] == [8 * 4 - 1, 0, 16]
    assert r[schema.PRESENT_CLASSES] == [0, 2]
    assert mask[5, 7] == 255
    bad = rows[1]
    assert bad[schema.ERROR] == "OSError: truncated" and bad[schema.MASK] is None
    assert bad[schema.WIDTH] is None and bad[schema.SHARD_SIZE] == 3
    assert rows[2][schema.CLASS_PIXEL_COUNTS] == [0, 12, 0]


def test_wrong_sized_prediction_becomes_error_row() -> None:
    class Shrinking:
        def predict(self, images):
            return [encode_pred(img) for img in images]

    def encode_pred(img):
        from types import SimpleNamespace

        h, w = img.shape[0] // 2, img.shape[1]
        return SimpleNamespace(
            label_map=np.zeros((h, w), np.uint8),
            confidence=np.zeros((h, w), np.float32),
            class_counts=None,
        )

    actor = SegmentationActor(lambda e: Shrinking(), np.zeros((3, 2), np.float32), num_classes=3)
    rows = _rows(actor, _decoded_batch())
    assert rows[0][schema.STATUS] == "error" and "do not match" in rows[0][schema.ERROR]


def test_predictor_exceptions_propagate() -> None:
    class Broken:
        def predict(self, images):
            raise RuntimeError("CUDA error: device lost")

    actor = SegmentationActor(lambda e: Broken(), np.zeros((3, 2), np.float32), num_classes=3)
    with pytest.raises(RuntimeError, match="device lost"):
        actor(_decoded_batch())


def test_an_image_that_fails_alone_becomes_an_error_row(colour_factory) -> None:
    """A batch failure is retried image by image; only the image that fails alone is an error."""

    class FailsOnGreen:
        def __init__(self, inner):
            self.inner = inner
            self.calls = []

        def predict(self, images):
            self.calls.append(len(images))
            if any(img.shape == (3, 4, 3) for img in images):
                raise MemoryError("cannot allocate for this aspect ratio")
            return self.inner.predict(images)

    predictor = None

    def factory(emb):
        nonlocal predictor
        predictor = FailsOnGreen(colour_factory(emb))
        return predictor

    actor = SegmentationActor(factory, np.eye(3, 8, dtype=np.float32), num_classes=3)
    rows = _rows(actor, _decoded_batch())
    assert predictor.calls == [2, 1, 1]  # the batch, then each ok image alone
    assert [r[schema.STATUS] for r in rows] == ["ok", "error", "error"]
    assert rows[0][schema.CLASS_PIXEL_COUNTS] == [8 * 4 - 1, 0, 16]
    assert rows[2][schema.ERROR] == "MemoryError: cannot allocate for this aspect ratio"
    assert rows[2][schema.MASK] is None


def test_prepared_images_are_labelled_at_their_original_size(colour_factory) -> None:
    """With ``prepared=True`` the predictor gets the decode stage's resized images and sizes."""
    seen = []

    class Upsampling:
        def __init__(self, inner):
            self.inner = inner

        def predict(self, images, sizes):
            seen.append(([img.shape for img in images], sizes))
            originals = [
                np.repeat(np.repeat(img, 2, 0), 2, 1)[:h, :w]
                for img, (h, w) in zip(images, sizes, strict=True)
            ]
            return self.inner.predict(originals)

    batch = decode.prepare_batch(_decoded_batch(), lambda img: img[::2, ::2].copy())
    actor = SegmentationActor(
        lambda e: Upsampling(colour_factory(e)), np.eye(3, 8, dtype=np.float32), 3, prepared=True
    )
    rows = _rows(actor, batch)
    assert seen == [([(3, 4, 3), (2, 2, 3)], [(6, 8), (3, 4)])]
    assert [r[schema.STATUS] for r in rows] == ["ok", "error", "ok"]
    assert encode.decode_png(rows[0][schema.MASK]["bytes"]).shape == (6, 8)
    assert rows[2][schema.CLASS_PIXEL_COUNTS] == [0, 12, 0]


def test_prepare_errors_become_error_rows() -> None:
    def reject_green(img):
        if img.shape == (3, 4, 3):
            raise ValueError("too small")
        return img

    batch = decode.prepare_batch(_decoded_batch(), reject_green)
    assert list(batch[schema.STATUS]) == ["ok", "error", "error"]
    assert batch[schema.ERROR][2] == "ValueError: too small"
    assert batch[schema.IMAGE][2].shape == decode.EMPTY_IMAGE.shape


def test_predictor_gets_writable_images_from_read_only_batches(colour_factory) -> None:
    """Ray Data's batches view Arrow buffers (read-only); torch.from_numpy warns on those."""
    seen = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def predict(self, images):
            seen.extend(img.flags.writeable for img in images)
            return self.inner.predict(images)

    batch = _decoded_batch()
    for i in (0, 2):  # the decoded images (1 is the shared empty placeholder)
        batch[schema.IMAGE][i].setflags(write=False)
    actor = SegmentationActor(lambda emb: Recording(colour_factory(emb)), np.eye(3, 8), 3)
    rows = _rows(actor, batch)
    assert seen == [True, True] and [r[schema.STATUS] for r in rows] == ["ok", "error", "ok"]
    assert not batch[schema.IMAGE][0].flags.writeable  # the batch itself is left as it was
