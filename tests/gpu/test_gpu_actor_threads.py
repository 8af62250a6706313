"""``--actor-threads 2`` on CUDA: each thread's predictions run on its own non-default stream,
and two threads at once give what one thread gives (ZegCLIP, NACLIP, and a compiled forward,
which runs one call at a time). Tiny random models, real photos; skipped without CUDA.

``pytest -q tests/gpu/test_gpu_actor_threads.py`` on the device machine (about a minute, most
of it compiling).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch
from threads import assert_same_predictions, run_together
from tiny_models import tiny_predictor

from zegclip.predictor import SegPredictor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs CUDA: checks the CUDA stream of each --actor-threads thread",
    ),
]

NAMES = ["car", "road", "sky", "tree", "person"]
SUMS_RTOL = 1e-9  # float64 confidence sums are added with CUDA atomics, in no fixed order


def _batches(sample_photos, prepare) -> list[tuple[list, list]]:
    """Four prepared batches of two photos (480x360 JPEGs, then PNGs of other sizes)."""
    photos = [_rgb(p) for p in sample_photos.jpegs(4) + sample_photos.pngs(4)]
    return [
        ([prepare(p) for p in photos[i : i + 2]], [p.shape[:2] for p in photos[i : i + 2]])
        for i in range(0, 8, 2)
    ]


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _record_streams(predictor: SegPredictor) -> dict[int, set]:
    """thread id -> CUDA streams the scorer's crop forward ran on (eager forward only)."""
    seen: dict[int, set] = {}
    forward = predictor.scorer.crop_scores

    def recording(*args, **kwargs):
        stream = torch.cuda.current_stream()
        seen.setdefault(threading.get_ident(), set()).add((stream.device, stream.cuda_stream))
        return forward(*args, **kwargs)

    predictor.scorer.crop_scores = recording
    return seen


@pytest.mark.parametrize("mode", ["zegclip", "naclip"])
def test_each_thread_runs_on_its_own_stream_with_the_one_thread_results(mode, sample_photos):
    predictor = tiny_predictor(mode, NAMES, device="cuda", precision="bf16")
    batches = _batches(sample_photos, predictor.scorer.prepare)
    streams = _record_streams(predictor)
    pairs = [batches[:2], batches[2:]]  # each thread: two batches in turn
    together = run_together(lambda pair: [predictor.predict(*b) for b in pair], pairs, repeats=2)
    assert len(streams) == 2, streams
    per_thread = list(streams.values())
    assert all(len(s) == 1 for s in per_thread), per_thread  # one stream per thread, kept
    (a,), (b,) = per_thread
    default = torch.cuda.default_stream()
    assert a != b and default.cuda_stream not in (a[1], b[1])
    serial = [predictor.predict(*batch) for batch in batches]
    for runs, expected in zip(together, (serial[:2], serial[2:]), strict=True):
        for run in runs:
            for got, want in zip(run, expected, strict=True):
                assert_same_predictions(got, want, sums_rtol=SUMS_RTOL)
    assert len(np.unique(serial[0][0].label_map)) > 1  # something to get wrong


@pytest.mark.slow
def test_compiled_forward_from_two_threads_gives_the_one_thread_results(sample_photos):
    predictor = tiny_predictor(
        "zegclip", NAMES, device="cuda", precision="bf16", compile=True, max_crops=4
    )
    predictor.warm_up()
    batches = _batches(sample_photos, predictor.scorer.prepare)
    serial = [predictor.predict(*batch) for batch in batches]
    together = run_together(lambda i: predictor.predict(*batches[i]), [0, 2], repeats=3)
    for i, runs in zip([0, 2], together, strict=True):
        for run in runs:
            assert_same_predictions(run, serial[i], sums_rtol=SUMS_RTOL)
