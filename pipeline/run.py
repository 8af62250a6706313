"""Build and run the labelling job: plan shards, stream them through Ray Data, write outputs.

Stages (all ``map_batches`` calls of the project live here):

1. ``read.read_shard_batch``: shard descriptor -> image bytes (CPU tasks);
2. ``decode.decode_batch``: bytes -> RGB arrays + status (CPU tasks), then, when the model
   hands one over, ``decode.prepare_batch``: its CPU preprocessing (the official resize), fused
   into the same tasks;
3. ``infer.SegmentationActor``: actor pool, one predictor per actor (GPU), raw predictions;
4. ``encode_stage.encode_batch``: PNG encoding and per-class statistics (CPU tasks);
5. the driver consumes the stream, groups rows per shard and writes each finished shard's
   Parquet file and marker (``pipeline.write``), logging progress as shards complete.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline import decode, encode_stage, read, schema, storage, write
from pipeline.config import ConfigError, LabelJobConfig, validate
from pipeline.infer import SegmentationActor
from pipeline.predictor import ImagePreparer, PredictorFactory, VocabularyEncoder
from pipeline.progress import ProgressLog, ShardCollector

logger = logging.getLogger(__name__)

MAX_ERRORS_LISTED = 20


@dataclass
class JobPlan:
    """What a run will do, decided before any heavy work.

    Attributes:
        shards: shards to process now, in listing order.
        finished: ids of input shards that already have a marker (skipped).
        num_input_shards: all shards of the input.
        ignored_files: input files without a supported extension.
    """

    shards: list[read.ShardSpec]
    finished: list[str]
    num_input_shards: int
    ignored_files: int


@dataclass
class JobSummary:
    """Outcome of one run (also written to ``run.json``)."""

    run_id: str
    output: str
    num_input_shards: int
    shards_written: int = 0
    shards_skipped: int = 0
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
        rows = [
            (
                "shards",
                f"{self.num_input_shards} in input, {self.shards_written} written, "
                f"{self.shards_skipped} already done",
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


def init_ray(**kwargs: Any) -> None:
    """Connect to ``RAY_ADDRESS`` when set (e.g. under ``ray job submit``), else start a local
    Ray; never silently attach to a stray ``ray start`` cluster. No-op when already connected."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", **kwargs)


def plan_job(cfg: LabelJobConfig, model: dict[str, Any]) -> JobPlan:
    """Validate the config against storage and decide which shards to process.

    Raises:
        ConfigError: invalid values, unreadable or empty input, unwritable output, or an
            output written with another vocabulary/model (without ``--overwrite``).
    """
    validate(cfg)
    try:
        shards, ignored = read.list_shards(cfg.input, cfg.shard_size)
    except OSError as e:
        raise ConfigError(
            f"--input {cfg.input}: {e}. Check the URI and, for S3, the AWS_* environment."
        ) from e
    if not shards:
        raise ConfigError(
            f"--input {cfg.input}: no images ({', '.join(read.IMAGE_EXTENSIONS)}), .tar or "
            ".parquet files found; point it at a folder, prefix or glob that holds some."
        )
    try:
        storage.check_writable(cfg.output)
    except OSError as e:
        raise ConfigError(f"--output {cfg.output} is not writable: {e}.") from e
    finished = [] if cfg.overwrite else _finished_matching(cfg, model, shards)
    done = set(finished)
    todo = [s for s in shards if s.shard_id not in done]
    return JobPlan(_apply_limit(todo, cfg.limit), finished, len(shards), ignored)


def _finished_matching(
    cfg: LabelJobConfig, model: dict[str, Any], shards: list[read.ShardSpec]
) -> list[str]:
    ids = {s.shard_id for s in shards}
    finished = [s for s in write.finished_shards(cfg.output) if s in ids]
    if finished:
        previous = write.read_marker(cfg.output, finished[0]).get("fingerprint")
        if previous != write.fingerprint(cfg.class_names, model):
            raise ConfigError(
                f"--output {cfg.output} holds labels made with another vocabulary or model; "
                "pass --overwrite to replace them or choose a new --output."
            )
    return finished


def _apply_limit(shards: list[read.ShardSpec], limit: int | None) -> list[read.ShardSpec]:
    if limit is None:
        return shards
    kept, total = [], 0
    for shard in shards:
        if total >= limit:
            break
        kept.append(shard)
        total += read.count_rows(shard)
    return kept


def resolve_num_gpus(cfg: LabelJobConfig) -> float:
    """``--num-gpus-per-actor`` or, when unset, 1 if the cluster has GPUs else 0."""
    if cfg.num_gpus_per_actor is not None:
        return cfg.num_gpus_per_actor
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def build_dataset(
    cfg: LabelJobConfig,
    shards: list[read.ShardSpec],
    predictor_factory: PredictorFactory,
    embeddings_ref: ray.ObjectRef,
    prepare_image: ImagePreparer | None = None,
) -> ray.data.Dataset:
    """The lazy read -> decode -> segment -> encode dataset; rows follow ``STREAM_SCHEMA``."""
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
    min_size, max_size = cfg.actor_pool_size
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
        compute=ray.data.ActorPoolStrategy(min_size=min_size, max_size=max_size),
        num_gpus=resolve_num_gpus(cfg),
        num_cpus=cfg.num_cpus_per_actor,
    )
    return ds.map_batches(
        encode_stage.encode_batch,
        fn_kwargs={"num_classes": len(cfg.class_names)},
        batch_size=cfg.batch_size,
        batch_format="numpy",
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


def _consume(
    ds: ray.data.Dataset,
    cfg: LabelJobConfig,
    plan: JobPlan,
    marker_base: dict[str, Any],
    out_schema: pa.Schema,
    summary: JobSummary,
) -> None:
    collector, progress = ShardCollector(), ProgressLog(len(plan.shards))
    # prefetch_batches=0: with prefetching, each block reaches the driver only once the next
    # one is ready, which delays markers (and progress) by a whole batch.
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        progress.rows(table)
        for shard_id, parts in collector.add(table):
            num_rows, num_errors = _write_finished(
                cfg, shard_id, parts, marker_base, out_schema, summary
            )
            progress.shard_done(shard_id, num_rows, num_errors)
    if collector.pending:
        raise RuntimeError(f"stream ended with incomplete shards {collector.pending[:5]}")


def _write_finished(
    cfg: LabelJobConfig,
    shard_id: str,
    parts: list[pa.Table],
    marker_base: dict[str, Any],
    out_schema: pa.Schema,
    summary: JobSummary,
) -> tuple[int, int]:
    """Write one complete shard and its marker; update ``summary``; return (rows, errors)."""
    shard = write.assemble_shard(parts, out_schema)
    errors = _error_rows(shard)
    marker = {
        **marker_base,
        "shard_id": shard_id,
        "rows": shard.num_rows,
        "errors": len(errors),
        "class_stats": write.shard_class_stats(shard, len(cfg.class_names)),
    }
    write.write_shard(cfg.output, shard_id, shard, marker)
    summary.shards_written += 1
    summary.images += shard.num_rows
    summary.errors += len(errors)
    room = MAX_ERRORS_LISTED - len(summary.first_errors)
    summary.first_errors.extend(errors[: max(room, 0)])
    return shard.num_rows, len(errors)


def _error_rows(table: pa.Table) -> list[dict[str, str]]:
    errors = table.filter(pc.equal(table[schema.STATUS], schema.STATUS_ERROR))
    cols = (schema.IMAGE_ID, schema.SOURCE_URI, schema.ERROR)
    return errors.select(list(cols)).to_pylist()


def run_label_job(
    cfg: LabelJobConfig,
    predictor_factory: PredictorFactory,
    encode_vocabulary: VocabularyEncoder,
    model: dict[str, Any],
    *,
    plan: JobPlan | None = None,
    prepare_image: ImagePreparer | None = None,
) -> JobSummary:
    """Run the job end to end and write ``run.json`` and ``class_stats.parquet``.

    Args:
        cfg: job configuration (``class_names`` filled in).
        predictor_factory: called once per actor with the vocabulary embedding.
        encode_vocabulary: called once, on the driver.
        model: JSON-serialisable model description for metadata.
        plan: from :func:`plan_job`; planned here when omitted.
        prepare_image: the model's picklable CPU preprocessing, run in the decode tasks; the
            predictor then gets ``predict(images, sizes)`` (see ``pipeline.predictor``).

    Raises:
        ConfigError: see :func:`plan_job`.
    """
    start = time.monotonic()
    plan = plan or plan_job(cfg, model)
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    summary = JobSummary(
        run_id, cfg.output, plan.num_input_shards, shards_skipped=len(plan.finished)
    )
    logger.info(
        "run %s: %d shards to do, %d already done, %d files ignored",
        run_id,
        len(plan.shards),
        len(plan.finished),
        plan.ignored_files,
    )
    if cfg.overwrite:
        write.clear_outputs(cfg.output)
    init_ray()
    t_vocab = time.monotonic()
    embeddings = _encode_vocabulary(encode_vocabulary)
    summary.vocabulary_s = time.monotonic() - t_vocab
    if plan.shards:
        ref = ray.put(embeddings)
        ds = build_dataset(cfg, plan.shards, predictor_factory, ref, prepare_image)
        marker_base = {
            "run_id": run_id,
            "fingerprint": write.fingerprint(cfg.class_names, model),
            "schema_version": schema.SCHEMA_VERSION,
        }
        out_schema = schema.output_schema(cfg.class_names, model, run_id)
        t0 = time.monotonic()
        _consume(ds, cfg, plan, marker_base, out_schema, summary)
        summary.pipeline_s = time.monotonic() - t0
    _finish(cfg, model, plan, summary, start)
    return summary


def _finish(
    cfg: LabelJobConfig, model: dict[str, Any], plan: JobPlan, summary: JobSummary, start: float
) -> None:
    markers = [write.read_marker(cfg.output, s) for s in write.finished_shards(cfg.output)]
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
                "shards_written": summary.shards_written,
                "shards_skipped": summary.shards_skipped,
                "input_shards": summary.num_input_shards,
                "ignored_input_files": plan.ignored_files,
            },
            "output_totals": {
                "shards": len(markers),
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
        },
    )
