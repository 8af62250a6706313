"""The device-resident predictor against the pre-issue-11 host path, on real photos.

For every family (ZegCLIP, ZegOT, the four training-free methods) the new ``SegPredictor`` must
give the same label maps as ``LegacySegPredictor`` (identical labels and counts, uint8
confidence within 1/255 of the old float confidence), and reducing classes in small chunks must
give the same result as one chunk.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from legacy_predictor import LegacySegPredictor
from tiny_models import TINY_CLIP

import zegclip
from zegclip import ClipSpec
from zegclip.models.trainfree.model import build_frozen_clip
from zegclip.models.zegot.config import ZegOTConfig
from zegclip.models.zegot.model import build_zegot
from zegclip.predictor import BACKGROUND, SegPredictor
from zegclip.reduce import row_chunks

NAMES = ["car", "road", "sky", "tree", "person"]
TINY = ClipSpec(model=TINY_CLIP, pretrained=None)


def _photos(sample_photos) -> list[np.ndarray]:
    """A JPEG photo (480x360) and a PNG photo of another size, HWC uint8 RGB."""
    paths = [*sample_photos.jpegs(1), *sample_photos.pngs(1)]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


@pytest.fixture(scope="module")
def families() -> dict:
    """name -> (scorer, (S, ...) embeddings), tiny random weights."""
    torch.manual_seed(0)
    out = {"zegclip": zegclip.build_zegclip(_tiny_zegclip_config())}
    out["zegot"] = build_zegot(
        ZegOTConfig(clip=TINY, num_prompts=3, layers=(-2, -1), seen_classes=("car", "road"))
    )
    for method in ("maskclip", "sclip", "clearclip", "naclip"):
        out[method] = build_frozen_clip(TINY, method=method)
    templates = ["a photo of a {}."]
    with torch.inference_mode():
        return {k: (m, m.encode_vocabulary(NAMES, templates=templates)) for k, m in out.items()}


def _tiny_zegclip_config():
    return zegclip.ZegCLIPConfig(
        clip=TINY, num_prompt_tokens=4, decoder_ffn_dim=128, seen_classes=("car", "road")
    )


def _assert_same_labels(new, old, num_classes: int) -> None:
    np.testing.assert_array_equal(new.label_map, old.label_map)
    np.testing.assert_array_equal(new.class_counts, old.class_counts)
    expected = np.rint(np.clip(old.confidence, 0, 1) * 255)
    assert new.confidence.dtype == np.uint8
    assert np.abs(new.confidence.astype(int) - expected).max() <= 1
    labelled = old.label_map < num_classes
    old_sums = np.bincount(
        old.label_map[labelled],
        weights=old.confidence[labelled].astype(np.float64),
        minlength=num_classes,
    )
    np.testing.assert_allclose(new.confidence_sums, old_sums, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("family", ["zegclip", "zegot", "maskclip", "sclip", "clearclip", "naclip"])
def test_device_path_equals_host_path_on_real_photos(families, family, sample_photos):
    scorer, emb = families[family]
    index = np.array([0, 1, 2, 3, 4])
    seen = scorer.seen_mask(NAMES)
    photos = _photos(sample_photos)
    kwargs = dict(seen=seen, min_score=scorer.default_min_score)
    new = SegPredictor(scorer, emb, index, 5, **kwargs).predict(photos)
    old = LegacySegPredictor(scorer, emb, index, 5, **kwargs).predict(photos)
    for n, o in zip(new, old, strict=True):
        _assert_same_labels(n, o, 5)
    assert any(len(np.unique(n.label_map)) > 1 for n in new)  # not a degenerate constant map


@pytest.mark.parametrize("family", ["zegclip", "naclip"])
def test_synonyms_and_background_rows_in_any_order_match_the_host_path(
    families, family, sample_photos
):
    """Rows out of class order (a synonym after a background word): sorted on the device."""
    scorer, emb = families[family]
    index = np.array([0, BACKGROUND, 1, 0, 2])  # "tree" is a synonym of class 0 placed last
    photo = _photos(sample_photos)[:1]
    kwargs = dict(min_score=None)
    new = SegPredictor(scorer, emb, index, 3, **kwargs).predict(photo)[0]
    old = LegacySegPredictor(scorer, emb, index, 3, **kwargs).predict(photo)[0]
    _assert_same_labels(new, old, 3)
    assert len(np.unique(new.label_map)) > 1


@pytest.mark.parametrize("family", ["zegclip", "naclip"])
def test_chunked_class_reduction_equals_one_chunk(families, family, sample_photos):
    scorer, emb = families[family]
    index = np.array([0, 1, 1, 2, BACKGROUND])
    photos = _photos(sample_photos)
    pixels = photos[0].shape[0] * photos[0].shape[1]
    kwargs = dict(min_score=scorer.default_min_score)
    whole = SegPredictor(scorer, emb, index, 3, **kwargs).predict(photos)
    chunked = SegPredictor(scorer, emb, index, 3, max_elements=2 * pixels, **kwargs)
    for c, w in zip(chunked.predict(photos), whole, strict=True):
        np.testing.assert_array_equal(c.label_map, w.label_map)
        np.testing.assert_array_equal(c.class_counts, w.class_counts)
        assert np.abs(c.confidence.astype(int) - w.confidence.astype(int)).max() <= 1
        np.testing.assert_allclose(c.confidence_sums, w.confidence_sums, rtol=1e-5)


def test_row_chunks_cover_all_rows_within_the_budget():
    chunks = row_chunks(171, 3000, 4000, 2**26)
    assert chunks[0] == slice(0, 5) and chunks[-1].stop == 171
    assert sum(c.stop - c.start for c in chunks) == 171
    assert row_chunks(20, 360, 480, 2**26) == [slice(0, 20)]
    assert row_chunks(3, 10_000, 10_000, 10) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_chunked_softmax_equals_torch_softmax():
    from zegclip.reduce import best_rows

    scores = torch.randn(2, 7, 6, 9, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([0, 0, 1, 2, 3, 3, 4])

    def activate(x):
        return (40.0 * x).softmax(dim=1)

    full = activate(F.interpolate(scores, size=(12, 18), mode="bilinear"))
    for budget in (2 * 12 * 18, 2 * 2 * 12 * 18, 2 * 7 * 12 * 18):  # N x rows x H x W
        best, label = best_rows(
            scores, index, (12, 18), activate=activate, softmax_scale=40.0, max_elements=budget
        )
        torch.testing.assert_close(best, full.max(1).values, atol=1e-6, rtol=1e-5)
        assert torch.equal(label, index[full.argmax(1)])


def test_pipeline_rows_from_the_device_path_match_the_host_path(families, sample_photos):
    """``pipeline.encode`` gives the same mask, counts and present classes; means within 1e-5."""
    from pipeline import encode, schema

    scorer, emb = families["naclip"]
    photo = _photos(sample_photos)[:1]
    h, w = photo[0].shape[:2]
    args = dict(num_classes=5, image_id="p.jpg", size=(w, h))
    index = np.arange(5)
    new = SegPredictor(scorer, emb, index, 5, min_score=0.1).predict(photo)[0]
    old = LegacySegPredictor(scorer, emb, index, 5, min_score=0.1).predict(photo)[0]
    new_row = encode.encode_prediction(new, **args)
    old_row = encode.encode_prediction(old, **args)
    for column in (schema.MASK, schema.CLASS_PIXEL_COUNTS, schema.PRESENT_CLASSES):
        assert new_row[column] == old_row[column]
    np.testing.assert_allclose(
        new_row[schema.PRESENT_MEAN_CONFIDENCE], old_row[schema.PRESENT_MEAN_CONFIDENCE], rtol=1e-5
    )


@pytest.mark.slow
def test_compiled_forward_gives_the_same_labels(families, sample_photos):
    """``compile=True``: torch.compile of the crop forward (inductor on CPU), padded batches."""
    scorer, emb = families["zegclip"]
    photos = _photos(sample_photos)
    index = np.arange(5)
    eager = SegPredictor(scorer, emb, index, 5, max_crops=4).predict(photos)
    compiled = SegPredictor(scorer, emb, index, 5, max_crops=4, compile=True)
    compiled.warm_up()
    for c, e in zip(compiled.predict(photos), eager, strict=True):
        assert (c.label_map == e.label_map).mean() > 0.999
        assert np.abs(c.confidence.astype(int) - e.confidence.astype(int)).max() <= 1


@pytest.mark.parametrize("family", ["zegclip", "zegot", "clearclip"])
def test_prepared_images_normalised_on_the_device_equal_preprocess(families, family, sample_photos):
    """The CPU ``prepare`` (cv2 resize) + device ``normalise`` split is bit-identical."""
    scorer, emb = families[family]
    photos = _photos(sample_photos)
    for photo in photos:
        split = scorer.normalise(torch.from_numpy(scorer.prepare(photo)))
        assert torch.equal(split, scorer.preprocess(photo))
    predictor = SegPredictor(scorer, emb, np.arange(5), 5)
    prepared = [scorer.prepare(p) for p in photos]
    sizes = [p.shape[:2] for p in photos]
    for a, b in zip(predictor.predict(prepared, sizes), predictor.predict(photos), strict=True):
        np.testing.assert_array_equal(a.label_map, b.label_map)
        np.testing.assert_array_equal(a.confidence, b.confidence)


def test_prepare_actor_encode_stages_reproduce_the_old_actor_rows(families, sample_photos):
    """Decode-task resize -> actor (device predictor, raw output) -> CPU encode stage gives the
    rows the old actor (host predictor + PNG encoding inside the actor) gave."""
    import functools

    from pipeline import decode, encode, encode_stage, schema
    from pipeline.infer import SegmentationActor
    from zegclip.preprocess import prepare_image

    scorer, emb = families["zegot"]
    photos = _photos(sample_photos)
    batch = decode.decoded_batch(photos, [f"p{i}.jpg" for i in range(len(photos))])
    seen, index = scorer.seen_mask(NAMES), np.arange(5)
    prepared = decode.prepare_batch(
        batch, functools.partial(prepare_image, short_side=scorer.short_side)
    )
    actor = SegmentationActor(
        lambda e: SegPredictor(scorer, e, index, 5, seen=seen, min_score=0.5),
        emb.numpy(),
        5,
        prepared=True,
    )
    rows = encode_stage.encode_batch(actor(prepared).to_pydict(), 5).to_pylist()
    old = LegacySegPredictor(scorer, emb, index, 5, seen=seen, min_score=0.5).predict(photos)
    for row, pred, photo in zip(rows, old, photos, strict=True):
        size = (photo.shape[1], photo.shape[0])
        before = encode.encode_prediction(pred, num_classes=5, image_id="x.jpg", size=size)
        assert row[schema.STATUS] == "ok"
        for column in (schema.CLASS_PIXEL_COUNTS, schema.PRESENT_CLASSES):
            assert row[column] == before[column]
        np.testing.assert_allclose(
            row[schema.PRESENT_MEAN_CONFIDENCE], before[schema.PRESENT_MEAN_CONFIDENCE], rtol=1e-5
        )
        mask, old_mask = (encode.decode_png(r[schema.MASK]["bytes"]) for r in (row, before))
        np.testing.assert_array_equal(mask, old_mask)
        conf, old_conf = (encode.decode_png(r[schema.CONFIDENCE]["bytes"]) for r in (row, before))
        assert np.abs(conf.astype(int) - old_conf.astype(int)).max() <= 1
