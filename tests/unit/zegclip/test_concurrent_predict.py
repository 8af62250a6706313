"""``SegPredictor.predict`` from two threads at once (an actor with ``--actor-threads 2``) gives
exactly what serial calls give, for ZegCLIP and NACLIP, and so does the pipeline's actor.

The predictor is fresh in each test, so the two threads also race to build its lazy caches
(coverage maps, NACLIP's neighbourhood bias). Real photos of two sizes, tiny random models.
On CUDA each thread also runs on its own stream: ``tests/gpu/test_gpu_actor_threads.py``.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch
from threads import assert_same_predictions, run_together
from tiny_models import tiny_predictor

from pipeline import decode
from pipeline.infer import SegmentationActor
from zegclip.predictor import _mha_fastpath

NAMES = ["car", "road", "sky", "tree", "person"]


def _batches(sample_photos, prepare) -> list[tuple[list, list]]:
    """Two prepared batches (images, original sizes): two 480x360 JPEGs, two PNGs of other
    sizes, as the decode tasks hand them to the actor."""
    jpegs = [_rgb(p) for p in sample_photos.jpegs(2)]
    pngs = [_rgb(p) for p in sample_photos.pngs(2)]
    assert pngs[0].shape != jpegs[0].shape
    return [([prepare(p) for p in b], [p.shape[:2] for p in b]) for b in (jpegs, pngs)]


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("mode", ["zegclip", "naclip"])
def test_two_threads_give_what_serial_calls_give(mode, sample_photos):
    predictor = tiny_predictor(mode, NAMES)
    batches = _batches(sample_photos, predictor.scorer.prepare)
    together = run_together(lambda b: predictor.predict(*b), batches)
    for batch, runs in zip(batches, together, strict=True):
        serial = predictor.predict(*batch)
        assert len(np.unique(serial[0].label_map)) > 1  # something to get wrong
        for predictions in runs:
            assert_same_predictions(predictions, serial)


def test_actor_called_from_two_threads_gives_the_serial_rows(sample_photos):
    predictor = tiny_predictor("zegclip", NAMES)
    actor = SegmentationActor(lambda _emb: predictor, np.zeros((1, 1)), len(NAMES), prepared=True)
    photos = [[_rgb(p) for p in sample_photos.jpegs(5)[i : i + 2]] for i in (0, 3)]
    batches = [
        decode.prepare_batch(decode.decoded_batch(b), predictor.scorer.prepare) for b in photos
    ]
    together = run_together(actor, batches)
    for batch, runs in zip(batches, together, strict=True):
        serial = actor(batch).to_pylist()
        for table in runs:
            assert table.to_pylist() == serial


def test_attention_switch_survives_nested_and_overlapping_calls():
    """The MHA fast-path switch is process-wide: a thread leaving ``predict`` must not switch
    it back under another thread still inside, and nesting restores the outer value."""
    switch = torch.backends.mha.get_fastpath_enabled
    before = switch()
    with _mha_fastpath(not before):
        with _mha_fastpath(before):
            assert switch() == before
        assert switch() == (not before)
    assert switch() == before
    inside, leave = threading.Event(), threading.Event()

    def first():  # enters before the test thread and leaves while it is still inside
        with _mha_fastpath(not before):
            inside.set()
            assert leave.wait(10)

    worker = threading.Thread(target=first)
    worker.start()
    assert inside.wait(10)
    with _mha_fastpath(not before):
        leave.set()
        worker.join()
        assert switch() == (not before)
    assert switch() == before
