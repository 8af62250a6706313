"""Run an export: per-shard work (locally or as Ray tasks), markers, then the common files.

Layout under ``--out`` besides the format's own files::

    export.json          format, options, run, class names and counts (written last)
    classes.txt          export class names, one a line (index = mask value; 255 = ignore)
    image_names.jsonl    one line per exported image: image_id, source_uri, name, split, size, files
    skipped.jsonl        one line per left-out image: image_id, reason
    _markers/<shard>.json  a shard's records; written after its files, so a shard is done iff it
                         exists. Re-running skips done shards; a half-written shard is redone
                         (same names, so files are overwritten, never duplicated).
    _export_config.json  the settings the markers were made with; a re-run with other settings
                         stops with an error instead of mixing exports.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import ModuleType

from pipeline import storage
from pipeline.export import coco, cvat, fiftyone, hf, labelstudio, mmseg, names, options, rows
from pipeline.lease import LEASE_FILE

logger = logging.getLogger(__name__)

FORMATS: dict[str, ModuleType] = {
    "mmseg": mmseg,
    "hf": hf,
    "coco": coco,
    "cvat": cvat,
    "labelstudio": labelstudio,
    "fiftyone": fiftyone,
}
MARKERS_DIR = "_markers"
CONFIG_FILE = "_export_config.json"


@dataclass(frozen=True)
class ExportPlan:
    """Everything a shard task needs (small and picklable)."""

    run: rows.RunInfo
    format: str
    out: str
    opts: options.ExportOptions
    class_map: options.ClassMap


@dataclass
class ExportSummary:
    """Counts of one export invocation."""

    shards_written: int = 0
    shards_skipped: int = 0
    images: int = 0
    skipped: int = 0
    seconds: float = 0.0


def check_export(run_uri: str, fmt: str, out: str, opts: options.ExportOptions) -> ExportPlan:
    """Validate the format, options, classes and RUN without touching ``out``.

    Raises:
        OptionError: bad format/options or ``--out`` inside RUN. FileNotFoundError: RUN is not
            a labelling run.
    """
    if fmt not in FORMATS:
        raise options.OptionError(f"--format must be one of {sorted(FORMATS)}, got {fmt!r}")
    opts.validate()
    if storage.is_within(out, run_uri):
        raise options.OptionError("--out must not be inside RUN")
    run = rows.open_run(run_uri)
    if not run.shards:
        raise options.OptionError(f"RUN {run_uri} has no finished shards")
    plan = ExportPlan(run, fmt, out, opts, options.build_class_map(run.vocabulary, opts.classes))
    if hasattr(FORMATS[fmt], "validate_classes"):
        FORMATS[fmt].validate_classes(plan.class_map.names)
    return plan


def plan_export(
    run_uri: str, fmt: str, out: str, opts: options.ExportOptions, *, overwrite: bool = False
) -> ExportPlan:
    """Validate everything before any work (:func:`check_export`); clear ``out`` when
    ``overwrite``.

    Raises:
        OptionError: as :func:`check_export`, or ``--out`` holding an export made with other
            settings. FileNotFoundError: RUN is not a labelling run.
    """
    plan = check_export(run_uri, fmt, out, opts)
    try:
        if overwrite:
            _clear_export(out)
        _check_config(plan)
    except OSError as e:
        raise options.OptionError(f"--out {out} is not writable: {e}") from e
    return plan


def _clear_export(out: str) -> None:
    """Delete a previous export; refuse a non-empty folder that is not one (a mistyped --out).
    The export's lease (``_lease.json``, held by this export) is kept."""
    try:
        files = storage.list_files(out)
    except FileNotFoundError:
        return
    scheme, root = storage.split_uri(out)
    rels = [storage.split_uri(f)[1][len(root.rstrip("/")) + 1 :] for f in files]
    rels = [r for r in rels if r != LEASE_FILE]
    if rels and not storage.exists(names.out_uri(out, CONFIG_FILE)):
        raise options.OptionError(f"--overwrite: {out} is not an export folder; not deleting it")
    for top in sorted({r.split("/", 1)[0] for r in rels if "/" in r}):
        storage.delete_tree(storage.join(out, top))
    for name in (r for r in rels if "/" not in r):
        storage.delete_file(storage.join(out, name))


def _config(plan: ExportPlan) -> dict:
    return {
        "format": plan.format,
        "run": plan.run.uri,
        "options": asdict(plan.opts),
        "classes": list(plan.class_map.names),
    }


def _check_config(plan: ExportPlan) -> None:
    uri = names.out_uri(plan.out, CONFIG_FILE)
    config = json.loads(json.dumps(_config(plan)))  # tuples -> lists, as read back
    if storage.exists(uri):
        stored = json.loads(storage.read_bytes(uri))
        # exports made before --image-format existed used what is now its default
        stored.get("options", {}).setdefault("image_format", options.IMAGE_AUTO)
        if stored != config:
            raise options.OptionError(
                f"--out {plan.out} holds an export with other settings; "
                "use another --out or --overwrite"
            )
    else:
        storage.write_bytes(uri, json.dumps(config, indent=2).encode())


def export_shard(plan: ExportPlan, shard_id: str) -> dict:
    """Write one shard's files and then its marker; return the marker."""
    fmt = FORMATS[plan.format]
    skipped: list[dict] = []

    def kept():
        for item in rows.shard_items(plan.run, shard_id, plan.class_map, plan.opts):
            if isinstance(item, rows.Skipped):
                skipped.append({"image_id": item.image_id, "reason": item.reason})
            else:
                yield item

    records = fmt.write_shard(plan.out, shard_id, kept(), plan.class_map.names)
    marker = {"shard_id": shard_id, "records": records, "skipped": skipped}
    storage.write_bytes(_marker_uri(plan, shard_id), json.dumps(marker).encode())
    return marker


def _marker_uri(plan: ExportPlan, shard_id: str) -> str:
    return names.out_uri(plan.out, MARKERS_DIR, f"{names.safe_name(shard_id)}.json")


def run_export(plan: ExportPlan, *, use_ray: bool = False) -> ExportSummary:
    """Export every finished shard of the run not yet exported, then write the common files."""
    start = time.monotonic()
    summary = ExportSummary()
    todo = [s for s in plan.run.shards if not storage.exists(_marker_uri(plan, s))]
    summary.shards_skipped = len(plan.run.shards) - len(todo)
    logger.info("%d shards to export, %d already done", len(todo), summary.shards_skipped)
    done = _run_ray(plan, todo) if use_ray else _run_local(plan, todo)
    summary.shards_written = done
    markers = [json.loads(storage.read_bytes(_marker_uri(plan, s))) for s in plan.run.shards]
    records = [r for m in markers for r in m["records"]]
    skipped = [s for m in markers for s in m["skipped"]]
    names.check_unique({r["image_id"]: r["name"] for r in records})
    FORMATS[plan.format].finish(plan.out, records, plan.class_map.names)
    summary.images, summary.skipped = len(records), len(skipped)
    summary.seconds = time.monotonic() - start
    _write_common(plan, records, skipped, summary)
    return summary


def _log_progress(done: int, total: int, start: float) -> None:
    logger.info("exported shard %d/%d (%.1f s)", done, total, time.monotonic() - start)


def _run_local(plan: ExportPlan, todo: Sequence[str]) -> int:
    start = time.monotonic()
    for i, shard_id in enumerate(todo, start=1):
        export_shard(plan, shard_id)
        _log_progress(i, len(todo), start)
    return len(todo)


def _run_ray(plan: ExportPlan, todo: Sequence[str]) -> int:
    """One Ray task per shard; tasks are retried by Ray and idempotent (same names)."""
    import ray

    task = ray.remote(num_cpus=1)(export_shard)
    plan_ref = ray.put(plan)
    pending = [task.remote(plan_ref, s) for s in todo]
    start, done = time.monotonic(), 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
        done += 1
        _log_progress(done, len(todo), start)
    return done


def _jsonl(items: Sequence[dict]) -> bytes:
    return "".join(json.dumps(i, ensure_ascii=True) + "\n" for i in items).encode()


def _write_common(
    plan: ExportPlan, records: Sequence[dict], skipped: Sequence[dict], summary: ExportSummary
) -> None:
    mapping = [{k: v for k, v in r.items() if k not in ("annotations", "task")} for r in records]
    out = plan.out
    storage.write_bytes(names.out_uri(out, "classes.txt"), "\n".join(plan.class_map.names).encode())
    storage.write_bytes(names.out_uri(out, "image_names.jsonl"), _jsonl(mapping))
    storage.write_bytes(names.out_uri(out, "skipped.jsonl"), _jsonl(skipped))
    info = {
        **_config(plan),
        "counts": {"images": summary.images, "skipped": summary.skipped},
        "splits": {s: sum(r["split"] == s for r in records) for s in options.SPLITS},
        "seconds": round(summary.seconds, 3),
    }
    storage.write_bytes(names.out_uri(out, "export.json"), json.dumps(info, indent=2).encode())
