"""The levels ``bench/bench_gpu.py`` measures, each as images/s with its GPU meters.

* :func:`ceiling`: the model's crop forward alone, ``max_crops`` crops per call, inside the
  predictor's own autocast and attention settings (``zegclip.devices.autocast`` at the
  predictor's precision, the same MHA fast path), so it runs at the levels' precision;
* :func:`predictor_level`: ``SegPredictor.predict(prepared, sizes)``, the call the pipeline
  makes after the CPU decode tasks resized the photos (``decode.prepare_batch``);
* :func:`actor_level`: ``pipeline.infer.SegmentationActor`` on prepared batches: the model stage
  alone (no resize, no PNG encoding: those run in other CPU tasks in a job), its ``__call__``
  from 1 thread or from several at once (``--actor-threads``: each thread on its own CUDA
  stream, so one batch's copy back and packing overlap another's kernels);
* :func:`dispatch_counts`: ATen ops per image and host round-trips per batch (see
  ``bench/dispatch_count.py``), after one warm-up call.

The whole job (``bench/gpu_job.py``) runs in Ray workers and is measured apart.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from dispatch_count import OpCounter
from gpu_meters import (
    BusySampler,
    count_cuda_syncs,
    peak_allocated_mib,
    reset_peak,
    synchronize,
)
from torch.utils.flop_counter import FlopCounterMode

import zegclip.predictor
from pipeline import decode
from pipeline.infer import SegmentationActor
from zegclip.devices import autocast

# The predictor's attention setting around its forward (fused MHA path on CUDA only).
_mha_fastpath = getattr(
    zegclip.predictor, "_mha_fastpath", lambda enabled: contextlib.nullcontext()
)


@dataclass
class LevelResult:
    """One level's figures; None where a meter does not apply (e.g. GPU memory on a CPU)."""

    images_per_s: float
    peak_mib: float | None = None
    busy_pct: float | None = None
    syncs_per_batch: int | None = None
    note: str = ""


def measure(
    call: Callable[[], object], images_per_call: float, seconds: float, device: torch.device
) -> LevelResult:
    """Images/s of repeated ``call()`` for at least ``seconds`` (one call at least), after one
    warm-up call; peak memory of this process and mean GPU busy % over the timed calls."""
    reset_peak(device)
    call()
    synchronize(device)
    with BusySampler(device.type == "cuda") as sampler:
        start = time.perf_counter()
        calls = 0
        while calls == 0 or time.perf_counter() - start < seconds:
            call()
            calls += 1
        synchronize(device)
        elapsed = time.perf_counter() - start
    return LevelResult(
        calls * images_per_call / elapsed, peak_allocated_mib(device), sampler.busy_pct()
    )


def syncs_per_call(call: Callable[[], object], device: torch.device) -> int:
    """Host round-trips of one call: CUDA's sync debug mode on a GPU, named ops on a CPU."""
    if device.type == "cuda":
        return count_cuda_syncs(call)
    with OpCounter() as counter:
        call()
    return counter.sync_total


def _forward(predictor, crops: torch.Tensor) -> torch.Tensor:
    """The predictor's crop forward (compiled when it is), in its autocast and MHA settings."""
    with (
        torch.inference_mode(),
        _mha_fastpath(predictor.device.type == "cuda"),
        autocast(predictor.device, predictor.precision),
    ):
        return predictor._crop_scores(crops)


def crop_gflop(predictor, crops: torch.Tensor) -> float | None:
    """GFLOP per crop of the forward (``FlopCounterMode``: matmuls, convolutions, attention);
    None for a compiled forward (the counter would see the compiled graph's calls only)."""
    if getattr(predictor, "compiled", False):
        return None
    params = [p for p in predictor.scorer.parameters() if p.requires_grad]
    for p in params:  # the counter's module tracker would hook gradients of such inputs
        p.requires_grad_(False)
    try:
        with FlopCounterMode(display=False) as counter:
            _forward(predictor, crops)
    finally:
        for p in params:
            p.requires_grad_(True)
    return counter.get_total_flops() / len(crops) / 1e9


def ceiling(predictor, prepared: np.ndarray, seconds: float) -> LevelResult:
    """Images/s of the bare crop forward: ``max_crops`` full crops per call, over the windows
    one prepared photo needs; the note gives crops/s and TFLOP/s (the issue's "% of bf16 peak")."""
    h, w = prepared.shape[:2]
    windows = predictor.scorer.windows(h, w)
    y1, y2, x1, x2 = windows[0]
    crops = torch.randn(predictor.max_crops, 3, y2 - y1, x2 - x1, device=predictor.device)
    call = lambda: _forward(predictor, crops)
    result = measure(call, predictor.max_crops / len(windows), seconds, predictor.device)
    result.syncs_per_batch = syncs_per_call(call, predictor.device)
    crops_per_s = result.images_per_s * len(windows)
    gflop = crop_gflop(predictor, crops)
    tflops = f", {gflop:.1f} GFLOP/crop, {gflop * crops_per_s / 1e3:.2f} TFLOP/s" if gflop else ""
    result.note = (
        f"{predictor.max_crops} crops/forward, {len(windows)} windows/photo, "
        f"{crops_per_s:.1f} crops/s{tflops}"
    )
    return result


def _batches(items: Sequence, batch: int) -> list:
    return [items[i : i + batch] for i in range(0, len(items) - batch + 1, batch)]


def predictor_level(
    predictor, prepared: list[np.ndarray], sizes: list[tuple[int, int]], batch: int, seconds: float
) -> LevelResult:
    """Images/s of ``predictor.predict(prepared, sizes)`` in batches of ``batch``."""
    chunks = itertools.cycle(list(zip(_batches(prepared, batch), _batches(sizes, batch))))
    call = lambda: predictor.predict(*next(chunks))
    result = measure(call, batch, seconds, predictor.device)
    result.syncs_per_batch = syncs_per_call(call, predictor.device)
    result.note = f"batch {batch}, prepared + sizes"
    return result


ROUND_PER_THREAD = 4  # batches per thread between two waits for all threads


def actor_level(
    predictor,
    photos: list[np.ndarray],
    prepare,
    num_classes: int,
    batch: int,
    seconds: float,
    threads: int = 1,
) -> LevelResult:
    """Images/s of ``SegmentationActor`` (prepared=True, around ``predictor``) on batches the
    decode tasks would hand it; preparing them is not timed. With ``threads`` > 1 its
    ``__call__`` runs from a pool of that many threads, as Ray runs an actor with
    ``--actor-threads``: each timed call hands the pool ``ROUND_PER_THREAD`` batches per thread
    and waits for all of them."""
    actor = SegmentationActor(lambda _emb: predictor, np.zeros((1, 1)), num_classes, prepared=True)
    ready = [
        decode.prepare_batch(decode.decoded_batch(list(c)), prepare)
        for c in _batches(photos, batch)
    ]
    chunks = itertools.cycle(ready)
    one = lambda: actor(next(chunks))
    note = f"batch {batch}, model stage alone, {threads} thread{'s' if threads > 1 else ''}"
    if threads == 1:
        result = measure(one, batch, seconds, predictor.device)
    else:
        rounds = ROUND_PER_THREAD * threads
        with ThreadPoolExecutor(threads) as pool:
            call = lambda: list(pool.map(actor, [next(chunks) for _ in range(rounds)]))
            result = measure(call, batch * rounds, seconds, predictor.device)
    result.syncs_per_batch = syncs_per_call(one, predictor.device)
    result.note = note
    return result


@dataclass
class Counts:
    """ATen ops per image and host round-trips per batch, at one batch size."""

    batch: int
    ops_per_image: float
    syncs_per_batch: int
    cuda_syncs_per_batch: int | None
    syncs_by_name: dict[str, int]


def dispatch_counts(
    predictor, prepared: list[np.ndarray], sizes: list, batches: Sequence[int], max_crops: int
) -> list[Counts]:
    """Counts of ``predict(prepared[:b], sizes[:b])`` for each ``b`` in ``batches``, with
    ``max_crops`` crops per forward (64: the GPU setting), after a warm-up call of batch 1."""
    saved, predictor.max_crops = predictor.max_crops, max_crops
    try:
        predictor.predict(prepared[:1], sizes[:1])
        out = []
        for b in batches:
            call = lambda b=b: predictor.predict(prepared[:b], sizes[:b])
            with OpCounter() as counter:
                call()
            cuda = count_cuda_syncs(call) if predictor.device.type == "cuda" else None
            out.append(Counts(b, counter.total / b, counter.sync_total, cuda, dict(counter.syncs)))
        return out
    finally:
        predictor.max_crops = saved
