"""Build and run the labelling job: plan what still needs a row, stream it through Ray Data.

Stages (all ``map_batches`` calls of the project live here):

1. ``read.read_shard_batch``: shard descriptor -> image bytes (CPU tasks);
2. ``decode.decode_batch``: bytes -> RGB arrays + status (CPU tasks), then, when the model
   hands one over, ``decode.prepare_batch``: its CPU preprocessing (the official resize), fused
   into the same tasks;
3. ``infer.SegmentationActor``: actor pool, one predictor per actor (GPU), raw predictions;
4. ``encode_stage.encode_batch``: PNG encoding and per-class statistics (CPU tasks);
5. ``write.write_part``: about ``shard_size`` labelled rows -> one Parquet file + marker
   (CPU tasks). The driver only receives one small record per written file (counts, first
   errors) and writes ``run.json`` and ``class_stats.parquet`` at the end.

Planning reads the output's markers (``done.load_done``), so a re-run labels only images
without a row (``--retry-errors``: or with an error row), whatever was added in between.

One run owns an output at a time (``pipeline.lease``): the lease is taken before planning,
checked before every deletion and by the writers before each Parquet file and marker.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import ray

from pipeline import decode, encode_stage, read, schema, write
from pipeline import lease as leases
from pipeline.config import ConfigError, LabelJobConfig, validate
from pipeline.infer import SegmentationActor
from pipeline.local_ray import init_ray, shutdown_on_signals
from pipeline.plan import JobPlan, plan_job
from pipeline.predictor import ImagePreparer, PredictorFactory, VocabularyEncoder
from pipeline.progress import ProgressLog, quiet_ray_data

__all__ = ["JobPlan", "JobSummary", "init_ray", "plan_job", "run_label_job", "shutdown_on_signals"]

logger = logging.getLogger(__name__)

MAX_ERRORS_LISTED = 20
MAX_OTHER_FILES_LISTED = 20
WRITE_CPUS = 0.5  # write tasks are mostly I/O; leave CPU for decode


@dataclass
class JobSummary:
    """Outcome of one run (also written to ``run.json``)."""

    run_id: str
    output: str
    num_input_images: int
    num_input_files: int
    already_labelled: int
    other_files: list[str] = field(default_factory=list)
    num_other_files: int = 0
    num_excluded: int = 0
    parts_written: int = 0
    images: int = 0
    errors: int = 0
    vocabulary_s: float = 0.0
    pipeline_s: float = 0.0
    total_s: float = 0.0
    first_errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        """Rows with status ``ok`` this run."""
        return self.images - self.errors

    @property
    def error_rate(self) -> float:
        """Fraction of this run's rows that are errors (0 when nothing ran)."""
        return self.errors / self.images if self.images else 0.0

    @property
    def images_per_s(self) -> float:
        """Rows per second of pipeline time."""
        return self.images / self.pipeline_s if self.pipeline_s > 0 else 0.0

    def table(self) -> str:
        """Short human-readable summary table."""
        other = f"{self.num_other_files} other files"
        if self.other_files:
            more = "" if len(self.other_files) == self.num_other_files else ", ..."
            other += f" ({', '.join(self.other_files)}{more})"
        rows = [
            (
                "inputs",
                f"{self.num_input_images} images, {self.num_input_files} tar/parquet files, "
                f"{other}, {self.num_excluded} excluded",
            ),
            (
                "done",
                f"{self.already_labelled} already labelled, {self.parts_written} files written",
            ),
            (
                "images",
                f"{self.images} ({self.ok} ok, {self.errors} error, {100 * self.error_rate:.1f}%)",
            ),
            (
                "time",
                f"{self.total_s:.1f} s (vocabulary {self.vocabulary_s:.1f} s, "
                f"pipeline {self.pipeline_s:.1f} s)",
            ),
            ("speed", f"{self.images_per_s:.1f} images/s"),
            ("output", self.output),
        ]
        return "\n".join(f"{k:<8}{v}" for k, v in rows)


def cluster_gpus() -> float:
    """GPUs of the connected Ray cluster (0 on a CPU-only cluster)."""
    return float(ray.cluster_resources().get("GPU", 0))


def resolve_num_gpus(cfg: LabelJobConfig, gpus: float | None = None) -> float:
    """``--num-gpus-per-actor`` or, when unset, 1 if the cluster has GPUs else 0.

    Args:
        gpus: the cluster's GPUs (default: asked from the connected Ray cluster).
    """
    if cfg.num_gpus_per_actor is not None:
        return cfg.num_gpus_per_actor
    return 1.0 if (cluster_gpus() if gpus is None else gpus) > 0 else 0.0


def resolve_pool_size(cfg: LabelJobConfig, gpus: float | None = None) -> tuple[int, int]:
    """``--concurrency`` or, for ``auto``, one actor per ``--num-gpus-per-actor`` share of the
    cluster's GPUs (e.g. 8 GPUs at 0.5 per actor: 16 actors); 1 actor on a CPU-only cluster.

    Args:
        gpus: the cluster's GPUs (default: asked from the connected Ray cluster).
    """
    explicit = cfg.actor_pool_size
    if explicit is not None:
        return explicit
    gpus = cluster_gpus() if gpus is None else gpus
    per_actor = resolve_num_gpus(cfg, gpus)
    size = max(1, int(gpus // per_actor)) if per_actor > 0 and gpus > 0 else 1
    return size, size


def resolve_actor_threads(cfg: LabelJobConfig, gpus: float | None = None) -> int:
    """``--actor-threads`` or, when unset, 2 for an actor with a GPU (batch k's copy back and
    packing overlap batch k+1's kernels, each thread on its own CUDA stream) and 1 on a CPU
    actor (its threads would only share the same cores).

    Args:
        gpus: the cluster's GPUs (default: asked from the connected Ray cluster).
    """
    if cfg.actor_threads is not None:
        return cfg.actor_threads
    return 2 if cfg.device != "cpu" and resolve_num_gpus(cfg, gpus) > 0 else 1


def actor_pool(cfg: LabelJobConfig, gpus: float | None = None) -> ray.data.ActorPoolStrategy:
    """The model stage's actor pool: :func:`resolve_pool_size` actors, each running
    :func:`resolve_actor_threads` calls at once (Ray runs the UDF itself concurrently only
    with ``enable_true_multi_threading``). Resources stay per actor: ``num_gpus`` and
    ``num_cpus`` are reserved once per actor whatever its threads.

    Args:
        gpus: the cluster's GPUs (default: asked from the connected Ray cluster).
    """
    gpus = cluster_gpus() if gpus is None else gpus
    min_size, max_size = resolve_pool_size(cfg, gpus)
    threads = resolve_actor_threads(cfg, gpus)
    return ray.data.ActorPoolStrategy(
        min_size=min_size,
        max_size=max_size,
        max_concurrent_calls_per_actor=threads,
        enable_true_multi_threading=threads > 1,
    )


def build_dataset(
    cfg: LabelJobConfig,
    shards: list[read.ShardSpec],
    predictor_factory: PredictorFactory,
    embeddings_ref: ray.ObjectRef,
    write_kwargs: dict[str, Any],
    prepare_image: ImagePreparer | None = None,
) -> ray.data.Dataset:
    """The lazy read -> decode -> segment -> encode -> write dataset; one small row per part.

    Args:
        write_kwargs: keyword arguments of ``write.write_part`` (output, schema, marker base).
        prepare_image: the model's picklable CPU preprocessing, run in the decode tasks.
    """
    ds = ray.data.from_items([s.to_row() for s in shards], override_num_blocks=len(shards))
    ds = ds.map_batches(
        read.read_shard_batch,
        fn_kwargs={"image_column": cfg.image_column},
        batch_size=1,
        batch_format="pyarrow",
    )
    ds = ds.map_batches(
        decode.decode_batch,
        fn_kwargs={"max_pixels": cfg.max_image_pixels},
        batch_size=cfg.batch_size,
        batch_format="numpy",
    )
    if prepare_image is not None:
        ds = ds.map_batches(
            decode.prepare_batch,
            fn_kwargs={"prepare_image": prepare_image},
            batch_size=cfg.batch_size,
            batch_format="numpy",
        )
    compute = actor_pool(cfg)
    logger.info(
        "model stage: %d-%d actors, %d batches at a time each",
        compute.min_size,
        compute.max_size,
        compute.max_concurrent_calls_per_actor,
    )
    ds = ds.map_batches(
        SegmentationActor,
        fn_constructor_kwargs={
            "predictor_factory": predictor_factory,
            "class_embeddings": [embeddings_ref],  # a bare ref would not be resolved
            "num_classes": len(cfg.class_names),
            "prepared": prepare_image is not None,
        },
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=compute,
        num_gpus=resolve_num_gpus(cfg),
        num_cpus=cfg.num_cpus_per_actor,
    )
    ds = ds.map_batches(
        encode_stage.encode_batch,
        fn_kwargs={"num_classes": len(cfg.class_names)},
        batch_size=cfg.batch_size,
        batch_format="numpy",
    )
    # Parquet is written here, in worker tasks; the driver never holds masks.
    return ds.map_batches(
        write.write_part,
        fn_kwargs=write_kwargs,
        batch_size=cfg.shard_size,
        batch_format="pyarrow",
        num_cpus=WRITE_CPUS,
    )


def _encode_vocabulary(encoder: VocabularyEncoder) -> np.ndarray:
    """Run the encoder once, on a GPU when the cluster has one (a COCO-sized vocabulary with 80
    templates is minutes of CPU, seconds of GPU), else on the driver.

    Returns:
        (S, ...) float32; the trailing shape is the model's business (S rows >= 1).
    """
    if ray.cluster_resources().get("GPU", 0) > 0:
        embeddings = ray.get(ray.remote(num_gpus=1)(_call).remote(encoder))
    else:
        embeddings = encoder()
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim < 2 or embeddings.shape[0] < 1:
        raise ValueError(f"vocabulary embedding has shape {embeddings.shape}; expected (S, D...)")
    return embeddings


def _call(fn: VocabularyEncoder) -> np.ndarray:
    return fn()


def _consume(ds: ray.data.Dataset, plan: JobPlan, summary: JobSummary, lease: leases.Lease) -> None:
    """Drain the stream of per-part records (a few hundred bytes each) into ``summary``.

    Raises:
        LeaseLost: the lease was taken over (the writers refuse to write, the driver stops).
    """
    try:
        _drain(ds, plan, summary, lease)
    except leases.LeaseLost:
        raise
    except Exception as e:  # a writer's LeaseLost arrives wrapped in Ray's task errors
        try:
            lease.check()
        except leases.LeaseLost as lost:
            raise lost from e
        raise


def _drain(ds: ray.data.Dataset, plan: JobPlan, summary: JobSummary, lease: leases.Lease) -> None:
    progress = ProgressLog(plan.expected_images)
    # prefetch_batches=0: records reach the driver (and the log) as soon as a part is written.
    try:
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            if lease.lost.is_set():
                lease.check()
            for record in table.to_pylist():
                progress.part_done(record["part"], record["rows"], record["errors"])
                summary.parts_written += 1
                summary.images += record["rows"]
                summary.errors += record["errors"]
                room = max(MAX_ERRORS_LISTED - len(summary.first_errors), 0)
                summary.first_errors.extend(json.loads(record["first_errors"])[:room])
    finally:
        progress.close()


def drop_superseded(
    output: str,
    stale: dict[str, set[str]],
    num_classes: int,
    lease: leases.LeaseToken | None = None,
) -> None:
    """Rewrite parts whose rows a newer part supersedes, in Ray tasks (see ``write.drop_rows``)."""
    if not stale:
        return
    task = ray.remote(num_cpus=WRITE_CPUS)(write.drop_rows)
    refs = [task.remote(output, p, sorted(ids), num_classes, lease) for p, ids in stale.items()]
    ray.get(refs)
    logger.info("dropped superseded rows from %d earlier parts", len(refs))


@contextmanager
def hold_output(cfg: LabelJobConfig) -> Iterator[leases.Lease]:
    """The lease on ``--output`` for one run (``--if-busy``, ``--wait-timeout``, ``--lease-ttl``).

    Raises:
        ConfigError: invalid values (checked before the lease is taken), or the lease cannot
            be written (``--output`` not writable).
        OutputBusy: another live run holds it.
    """
    validate(cfg)
    lease = leases.Lease(cfg.output, job="label", ttl_s=cfg.lease_ttl)
    try:
        lease.acquire(cfg.if_busy, cfg.wait_timeout)
    except OSError as e:
        raise ConfigError(f"--output {cfg.output} is not writable: {e}.") from e
    with leases.holding(lease):
        yield lease


def run_label_job(
    cfg: LabelJobConfig,
    predictor_factory: PredictorFactory,
    encode_vocabulary: VocabularyEncoder,
    model: dict[str, Any],
    *,
    plan: JobPlan | None = None,
    prepare_image: ImagePreparer | None = None,
    lease: leases.Lease | None = None,
    run_info: dict[str, Any] | None = None,
) -> JobSummary:
    """Run the job end to end and write ``run.json`` and ``class_stats.parquet``.

    Args:
        cfg: job configuration (``class_names`` filled in).
        predictor_factory: called once per actor with the vocabulary embedding.
        encode_vocabulary: called once, on the driver.
        model: JSON-serialisable model description for metadata.
        plan: from :func:`plan_job`, made while holding ``lease``; planned here when omitted.
        prepare_image: the model's picklable CPU preprocessing, run in the decode tasks; the
            predictor then gets ``predict(images, sizes)`` (see ``pipeline.predictor``).
        lease: the held lease on ``cfg.output`` (:func:`hold_output`); taken here when omitted.
        run_info: more ``run.json`` entries, e.g. ``min_score`` (the threshold in effect).

    Raises:
        ConfigError: see :func:`plan_job`.
        OutputBusy: another live run holds the output (only when ``lease`` is omitted).
        LeaseLost: another run took the lease over; this run stopped writing.
    """
    if lease is None:
        with hold_output(cfg) as held:
            return run_label_job(
                cfg,
                predictor_factory,
                encode_vocabulary,
                model,
                plan=plan,
                prepare_image=prepare_image,
                lease=held,
            )
    start = time.monotonic()
    plan = plan or plan_job(cfg, model)
    run_id = lease.run_id
    summary = _new_summary(run_id, cfg, plan)
    logger.info(
        "run %s: %d shards to read (%s images), %d images already labelled, %d other files",
        run_id,
        len(plan.shards),
        "?" if plan.expected_images is None else plan.expected_images,
        plan.num_done,
        len(plan.listing.other),
    )
    lease.check()  # deletions only by the holder
    if cfg.overwrite:
        write.clear_outputs(cfg.output)
    else:
        for name in write.remove_orphans(cfg.output):
            logger.info("removed %s: written by a killed run, never marked done", name)
    init_ray()
    quiet_ray_data()  # pipeline.progress reports instead
    drop_superseded(cfg.output, plan.stale, len(cfg.class_names), lease.token)
    t_vocab = time.monotonic()
    embeddings = _encode_vocabulary(encode_vocabulary)
    summary.vocabulary_s = time.monotonic() - t_vocab
    if plan.shards:
        write_kwargs = {
            "output": cfg.output,
            "out_schema": schema.output_schema(cfg.class_names, model, run_id),
            "marker_base": {
                "run_id": run_id,
                "fingerprint": write.fingerprint(cfg.class_names, model),
                "schema_version": schema.SCHEMA_VERSION,
            },
            "num_classes": len(cfg.class_names),
            "lease": lease.token,
        }
        ds = build_dataset(
            cfg, plan.shards, predictor_factory, ray.put(embeddings), write_kwargs, prepare_image
        )
        t0 = time.monotonic()
        _consume(ds, plan, summary, lease)
        summary.pipeline_s = time.monotonic() - t0
        drop_superseded(cfg.output, plan.retried, len(cfg.class_names), lease.token)
    lease.check()
    _finish(cfg, model, summary, start, run_info or {})
    return summary


def _new_summary(run_id: str, cfg: LabelJobConfig, plan: JobPlan) -> JobSummary:
    listing = plan.listing
    return JobSummary(
        run_id,
        cfg.output,
        num_input_images=len(listing.images),
        num_input_files=len(listing.files),
        already_labelled=plan.num_done,
        other_files=listing.other[:MAX_OTHER_FILES_LISTED],
        num_other_files=len(listing.other),
        num_excluded=listing.excluded,
    )


def _finish(
    cfg: LabelJobConfig,
    model: dict[str, Any],
    summary: JobSummary,
    start: float,
    run_info: dict[str, Any],
) -> None:
    markers = list(write.read_markers(cfg.output).values())
    write.write_class_stats(cfg.output, write.class_stats_table(cfg.class_names, markers))
    summary.total_s = time.monotonic() - start
    write.write_run_file(
        cfg.output,
        {
            "run_id": summary.run_id,
            "schema_version": schema.SCHEMA_VERSION,
            "finished_at": datetime.now(UTC).isoformat(),
            "config": cfg.to_dict(),
            "vocabulary": list(cfg.class_names),
            "model": model,
            "fingerprint": write.fingerprint(cfg.class_names, model),
            "counts": {
                "images": summary.images,
                "ok": summary.ok,
                "error": summary.errors,
                "parts_written": summary.parts_written,
                "already_labelled": summary.already_labelled,
                "input_images": summary.num_input_images,
                "input_files": summary.num_input_files,
                "other_input_files": summary.num_other_files,
                "excluded_input_files": summary.num_excluded,
            },
            "other_input_files": summary.other_files,
            "output_totals": {
                "parts": len(markers),
                "images": sum(m["rows"] for m in markers),
                "error": sum(m["errors"] for m in markers),
            },
            "durations_s": {
                "total": summary.total_s,
                "vocabulary": summary.vocabulary_s,
                "pipeline": summary.pipeline_s,
            },
            "images_per_s": summary.images_per_s,
            "first_errors": summary.first_errors,
            **run_info,
        },
    )
