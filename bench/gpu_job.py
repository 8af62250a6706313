"""The whole label job (``pipeline.run.run_label_job``) on a local Ray, for ``bench/bench_gpu.py``.

Throughput is timed from the first to the last written output part (``shard_size`` = the batch
size, so a part is about one batch), by the ``written_at`` time the worker stamps on each part's
marker: rows after the first part over the time between them.
Start-up is reported apart: Ray's start (:func:`start_ray`, once per bench), and per job the
time to the first written part, which holds the vocabulary encoding (its own figure), the
actors' start (model build, compile and warm-up) and the first batch's trip through every stage.
GPU busy % and memory are sampled over the steady window for the whole GPU (the actors run in
other processes).
"""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gpu_meters import BusySampler

import pipeline.run
import zegclip
from pipeline import write
from pipeline.config import LabelJobConfig


@dataclass
class JobResult:
    """One job's figures (seconds are wall-clock on the driver)."""

    images: int
    errors: int
    images_per_s: float | None  # first to last written part; None with a single part
    pipeline_images_per_s: float  # the job's own figure: rows over the whole pipeline time
    to_first_row_s: float
    vocabulary_s: float
    parts: int
    busy_pct: float | None
    peak_used_mib: float | None


def start_ray() -> float:
    """Seconds to start (or connect to) Ray, without the dashboard."""
    start = time.monotonic()
    pipeline.run.init_ray(include_dashboard=False)
    return time.monotonic() - start


def write_inputs(photo_bytes: list[bytes], count: int, folder: Path) -> None:
    """``count`` JPEG files in a fresh ``folder``, cycling through ``photo_bytes``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{i:06d}.jpg").write_bytes(photo_bytes[i % len(photo_bytes)])


def run_job(spec, vocab, photo_bytes: list[bytes], count: int, args, workdir: Path) -> JobResult:
    """Label ``count`` photos with ``spec`` through the real job; see the module docstring."""
    write_inputs(photo_bytes, count, workdir / "in")
    cfg = LabelJobConfig(
        input=str(workdir / "in"),
        output=str(workdir / "out"),
        vocab="bench",
        class_names=tuple(vocab.names),
        batch_size=args.batch_size,
        shard_size=args.batch_size,
        num_gpus_per_actor=args.gpus_per_actor if args.device == "cuda" else 0.0,
        concurrency=str(args.actors),
        overwrite=True,
    )
    with BusySampler(args.device == "cuda") as sampler:
        start, start_utc = time.monotonic(), datetime.now(UTC)
        summary = pipeline.run.run_label_job(
            cfg,
            functools.partial(zegclip.build_predictor, spec, vocab),
            functools.partial(zegclip.encode_vocabulary_for, spec, vocab, use_cache=False),
            zegclip.describe(spec),
            prepare_image=zegclip.image_preparer(spec),
        )
    marks = part_times(cfg.output, start, start_utc)
    (t_first, first_rows), t_last = marks[0], marks[-1][0]
    steady = (summary.images - first_rows) / (t_last - t_first) if t_last > t_first else None
    return JobResult(
        images=summary.images,
        errors=summary.errors,
        images_per_s=steady,
        pipeline_images_per_s=summary.images_per_s,
        to_first_row_s=t_first - start,
        vocabulary_s=summary.vocabulary_s,
        parts=len(marks),
        busy_pct=sampler.busy_pct(t_first, t_last),
        peak_used_mib=sampler.peak_used_mib(t_first, t_last),
    )


def part_times(output: str, start: float, start_utc: datetime) -> list[tuple[float, int]]:
    """(monotonic time the part was written, its rows) of every part, oldest first, from the
    markers' ``written_at`` (UTC, same machine) and the job's start in both clocks."""
    marks = []
    for marker in write.read_markers(output).values():
        written = datetime.fromisoformat(marker["written_at"])
        marks.append((start + (written - start_utc).total_seconds(), int(marker["rows"])))
    return sorted(marks)
