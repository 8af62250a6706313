"""The whole label job (``pipeline.run.run_label_job``) on a local Ray, for ``bench/bench_gpu.py``.

The job runs as ``jobs/label.py`` runs it (decode and resize in CPU tasks, the model in an actor
pool, encode and write in CPU tasks); only the predictor is wrapped (:class:`TimedPredictor`) so
that each actor appends the wall-clock start and end of every ``predict`` call to a log. Then:

* **throughput**: images over the time from the first model call's start to the last written
  row (the ``written_at`` stamp of the last part's marker): everything after start-up, the
  encode and write stages included. Ray Data may hand several parts to the writer at once, so
  timing between written parts alone would overstate it;
* **model window**: images over the first call's start to the last call's end (the actors'
  share of that time);
* **start-up**, reported apart: Ray's start (:func:`start_ray`, once per bench), and per job the
  time from ``run_label_job`` to the first model call: planning, the vocabulary encoding (its
  own figure), the actors' start (model build, compile and warm-up) and the first decode.

GPU busy % and memory are sampled over the throughput window for the whole GPU (the actors run
in other processes). Clocks: the driver and the actors share the machine's wall clock.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gpu_meters import BusySampler

import pipeline.run
import zegclip
from pipeline import write
from pipeline.config import LabelJobConfig


class TimedPredictor:
    """A predictor that appends ``start end images`` (wall-clock s) per ``predict`` to a file.

    Args:
        predictor: the real one (``SegPredictor``).
        log: a file on this machine (each actor appends its own lines).
    """

    def __init__(self, predictor, log: str) -> None:
        self._predictor = predictor
        self._log = log

    def predict(self, images, sizes=None):
        start = time.time()
        out = self._predictor.predict(images, sizes)
        end = time.time()
        with open(self._log, "a") as f:
            f.write(f"{start} {end} {len(images)}\n")
        return out


def timed_factory(spec, vocab, log: str, embeddings) -> TimedPredictor:
    """``predictor_factory`` of the job: ``zegclip.build_predictor`` wrapped in a timer."""
    return TimedPredictor(zegclip.build_predictor(spec, vocab, embeddings), log)


def encode_vocabulary(spec, vocab):
    """The job's vocabulary encoder, never from the cache (its time is part of start-up)."""
    return zegclip.encode_vocabulary_for(spec, vocab, use_cache=False)


@dataclass
class JobResult:
    """One job's figures; None where it could not be timed (no model call logged)."""

    images: int
    errors: int
    images_per_s: float | None  # first model call to last written row
    model_images_per_s: float | None  # first model call to last model call's end
    pipeline_images_per_s: float  # the job's own figure: rows over the whole pipeline time
    startup_s: float | None  # run_label_job start to the first model call
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


def _config(args, vocab, workdir: Path) -> LabelJobConfig:
    return LabelJobConfig(
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


def run_job(spec, vocab, photo_bytes: list[bytes], count: int, args, workdir: Path) -> JobResult:
    """Label ``count`` photos with ``spec`` through the real job; see the module docstring."""
    import functools

    write_inputs(photo_bytes, count, workdir / "in")
    cfg = _config(args, vocab, workdir)
    log = workdir / "predict-calls.txt"
    log.unlink(missing_ok=True)
    with BusySampler(args.device == "cuda") as sampler:
        start, wall = time.monotonic(), time.time()
        summary = pipeline.run.run_label_job(
            cfg,
            functools.partial(timed_factory, spec, vocab, str(log)),
            functools.partial(encode_vocabulary, spec, vocab),
            zegclip.describe(spec),
            prepare_image=zegclip.image_preparer(spec),
        )
    calls = read_calls(log)
    written = [t for t, _ in part_times(cfg.output)]
    first = min((c[0] for c in calls), default=None)
    last_model = max((c[1] for c in calls), default=None)
    rate = lambda t0, t1: summary.images / (t1 - t0) if t0 is not None and t1 > t0 else None
    mono = lambda t: start + (t - wall) if t is not None else None  # wall -> sampler clock
    return JobResult(
        images=summary.images,
        errors=summary.errors,
        images_per_s=rate(first, max(written)),
        model_images_per_s=rate(first, last_model),
        pipeline_images_per_s=summary.images_per_s,
        startup_s=None if first is None else first - wall,
        vocabulary_s=summary.vocabulary_s,
        parts=len(written),
        busy_pct=sampler.busy_pct(mono(first), mono(max(written))),
        peak_used_mib=sampler.peak_used_mib(mono(first), mono(max(written))),
    )


def read_calls(log: Path) -> list[tuple[float, float, int]]:
    """(start, end, images) of every logged ``predict`` call, oldest first."""
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
    return sorted((float(a), float(b), int(n)) for a, b, n in rows)


def part_times(output: str) -> list[tuple[float, int]]:
    """(wall-clock s the part was written, its rows) of every part, from the markers'
    ``written_at`` (UTC ISO time), oldest first."""
    marks = []
    for marker in write.read_markers(output).values():
        written = datetime.fromisoformat(marker["written_at"]).timestamp()
        marks.append((written, int(marker["rows"])))
    return sorted(marks)
