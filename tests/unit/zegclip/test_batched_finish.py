"""The batched finish: one set of device ops per batch, not per image (issue 23).

Counted on the CPU with ``bench/dispatch_count.py`` (torch dispatch modes; what it counts as a
host round-trip is documented there), 64 crops per forward as on a GPU, same-size 480x360
real photos: ATen ops per image at batch 32 must stay under 0.15 x batch 1, and host
round-trips per batch at most 8 whatever the batch size. A batch must give every image what it
gets alone, and mixed sizes are grouped.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from tiny_models import TINY_CLIP

import zegclip
from bench.dispatch_count import OpCounter
from zegclip.models.trainfree.model import build_frozen_clip
from zegclip.predictor import BACKGROUND, SegPredictor
from zegclip.stitch import plan_chunks

NAMES = ["car", "road", "sky", "tree", "person"]
TINY = zegclip.ClipSpec(model=TINY_CLIP, pretrained=None)


@pytest.fixture(scope="module")
def scorers() -> dict:
    """mode -> (scorer, (S, D) embeddings): ZegCLIP with seen classes, NACLIP (PAMR on)."""
    torch.manual_seed(0)
    config = zegclip.ZegCLIPConfig(
        clip=TINY, num_prompt_tokens=4, decoder_ffn_dim=128, seen_classes=("car", "road")
    )
    models = {"zegclip": zegclip.build_zegclip(config), "naclip": build_frozen_clip(TINY)}
    with torch.inference_mode():
        return {k: (m, m.encode_vocabulary(NAMES, templates=["a {}."])) for k, m in models.items()}


def _frames(sample_photos, n: int) -> list[np.ndarray]:
    """``n`` distinct real 480x360 RGB photos (bundled with scikit-image: CamVid's frame size)."""
    return [_rgb(p) for p in sample_photos.jpegs(n)]


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _predictor(scorers, mode: str, **kwargs) -> SegPredictor:
    scorer, emb = scorers[mode]
    index = np.arange(len(NAMES))
    seen = scorer.seen_mask(NAMES)
    return SegPredictor(
        scorer, emb, index, len(NAMES), seen=seen, min_score=scorer.default_min_score, **kwargs
    )


def _count(predictor: SegPredictor, photos: list[np.ndarray]) -> OpCounter:
    prepared = [predictor.scorer.prepare(p) for p in photos]
    sizes = [p.shape[:2] for p in photos]
    predictor.predict(prepared[:1], sizes[:1])  # caches (coverage maps, constants) filled
    with OpCounter() as counter:
        predictor.predict(prepared, sizes)
    return counter


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["zegclip", "naclip"])
def test_ops_per_image_shrink_with_the_batch_and_round_trips_do_not_grow(
    scorers, mode, sample_photos
):
    predictor = _predictor(scorers, mode, max_crops=64)
    photos = _frames(sample_photos, 32)
    assert photos[0].shape == (360, 480, 3)
    one, many = _count(predictor, photos[:1]), _count(predictor, photos)
    assert many.total / 32 <= 0.15 * one.total, (one.total, many.total / 32)
    assert one.sync_total <= 8, dict(one.syncs)
    assert many.sync_total <= 8, dict(many.syncs)
    assert many.sync_total == one.sync_total  # independent of the batch size


def test_dispatch_counter_sees_host_reads_under_inference_mode():
    t = torch.tensor([0.5, 2.0])  # built before counting: a device tensor
    with torch.inference_mode(), OpCounter() as counter:
        bool((t > 1).any())
        t.sum().item()
        t[t > 1]
        t.numpy()
    assert counter.syncs == {"is_nonzero": 1, "item": 1, "index(bool mask)": 1, "numpy": 1}
    assert counter.total >= 6


@pytest.mark.parametrize("mode", ["zegclip", "naclip"])
def test_a_batch_gives_each_image_what_it_gets_alone(scorers, mode, sample_photos):
    """Three same-size photos and a PNG photo of another size (two groups) batched vs one at
    a time, with a synonym and a background row out of class order."""
    scorer, emb = scorers[mode]
    photos = _frames(sample_photos, 3)
    photos.insert(1, _rgb(sample_photos.pngs(1)[0]))
    index = np.array([0, BACKGROUND, 1, 0, 2])
    predictor = SegPredictor(scorer, emb, index, 3, min_score=scorer.default_min_score)
    batched = predictor.predict(photos)
    for photo, b in zip(photos, batched, strict=True):
        alone = predictor.predict([photo])[0]
        assert b.label_map.shape == photo.shape[:2] and b.label_map.dtype == np.uint8
        np.testing.assert_array_equal(b.label_map, alone.label_map)
        np.testing.assert_array_equal(b.class_counts, alone.class_counts)
        assert np.abs(b.confidence.astype(int) - alone.confidence.astype(int)).max() <= 1
        np.testing.assert_allclose(b.confidence_sums, alone.confidence_sums, rtol=1e-5)
        labelled = b.label_map[b.label_map < 3]
        np.testing.assert_array_equal(b.class_counts, np.bincount(labelled, minlength=3))
    assert len(np.unique(np.concatenate([b.label_map.ravel() for b in batched]))) > 1


def test_more_than_255_classes_come_back_as_uint16(scorers, sample_photos):
    scorer, emb = scorers["zegclip"]
    rows = emb.repeat(60, 1)  # 300 rows, each its own class
    predictor = SegPredictor(scorer, rows, np.arange(300), 300, min_score=0.5)
    photo = _frames(sample_photos, 1)
    prediction = predictor.predict(photo)[0]
    assert prediction.label_map.dtype == np.uint16
    labels = prediction.label_map
    assert labels.max() == 65535 or labels.max() < 300
    np.testing.assert_array_equal(
        prediction.class_counts, np.bincount(labels[labels < 300], minlength=300)
    )


def test_chunks_are_window_major_full_and_shared_across_groups():
    windows = [[(0, 2, 0, 2), (0, 2, 1, 3)], [(0, 2, 0, 2)]]
    chunks = plan_chunks(windows, [3, 2], max_crops=4)
    flat = [(r.group, r.window[2], r.start, r.stop) for c in chunks for r in c]
    assert [sum(r.stop - r.start for r in c) for c in chunks] == [4, 4]
    assert flat == [(0, 0, 0, 3), (0, 1, 0, 1), (0, 1, 1, 3), (1, 0, 0, 2)]


@pytest.mark.parametrize("mode", ["zegclip", "naclip"])
def test_score_budget_runs_a_batch_in_waves_with_the_same_results(scorers, mode, sample_photos):
    """``max_score_elements`` bounds the stitched scores alive at once (171 classes at batch 64
    on a 40 GB GPU): a batch cut into waves of whole images gives what one wave gives."""
    photos = _frames(sample_photos, 5)
    photos.insert(2, _rgb(sample_photos.pngs(1)[0]))
    one_wave = _predictor(scorers, mode)
    rows, (h, w) = len(NAMES), one_wave.scorer.preprocess(photos[0]).shape[-2:]
    budget = 2 * rows * h * w  # two 480x360 images' scores
    waves = _predictor(scorers, mode, max_score_elements=budget)
    plan = waves._waves(waves._groups(photos, None))
    assert [len(g.members) for wave in plan for g in wave] == [2, 2, 1, 1]  # 5 JPEGs, 1 PNG
    assert len(plan) >= 3
    for wave in plan:
        used = sum(len(g.members) * rows * g.images[0, 0].numel() for g in wave)
        assert used <= budget or len(wave) == 1 and len(wave[0].members) == 1
    for got, expected in zip(waves.predict(photos), one_wave.predict(photos), strict=True):
        np.testing.assert_array_equal(got.label_map, expected.label_map)
        np.testing.assert_array_equal(got.confidence, expected.confidence)
        np.testing.assert_array_equal(got.class_counts, expected.class_counts)
