"""Planning: which inputs still need a row, decided from the listing and the output's markers.

Nothing heavy happens here: one listing of ``--input``, one read of every marker under
``--output`` (``done.load_done``), and the validation that stops a misconfigured job with a
``ConfigError`` (exit code 2) before any work starts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline import read, schema, storage, write
from pipeline.config import ConfigError, LabelJobConfig, validate
from pipeline.done import DoneIndex, load_done


@dataclass
class JobPlan:
    """What a run will do, decided before any heavy work.

    Attributes:
        shards: shards to read now (only images that still need a row).
        listing: everything found under ``--input``.
        num_done: images that already have a row in the output.
        stale: part -> ids to drop from it: rows a newer part supersedes (left by an earlier
            run) and pseudo-rows of tar/Parquet files that now have real rows.
        retried: part -> error ids this run relabels (``--retry-errors``); dropped from those
            parts once the run has written their new rows.
    """

    shards: list[read.ShardSpec]
    listing: read.Listing
    num_done: int
    stale: dict[str, set[str]] = field(default_factory=dict)
    retried: dict[str, set[str]] = field(default_factory=dict)

    @property
    def expected_images(self) -> int | None:
        """Images this run labels; None when tar/Parquet files (unknown row counts) are due."""
        if any(s.kind != read.KIND_IMAGES for s in self.shards):
            return None
        return sum(len(s.uris) for s in self.shards)


def plan_job(cfg: LabelJobConfig, model: dict[str, Any]) -> JobPlan:
    """Validate the config against storage and decide which images to label.

    Raises:
        ConfigError: invalid values, unreadable or empty input, unwritable output, or an
            output written with another vocabulary/model (without ``--overwrite``).
    """
    validate(cfg)
    listing = _list_input(cfg)
    try:
        storage.check_writable(cfg.output)
    except OSError as e:
        raise ConfigError(f"--output {cfg.output} is not writable: {e}.") from e
    done = DoneIndex() if cfg.overwrite else _load_matching(cfg, model)
    shards = _apply_limit(_todo_shards(cfg, listing, done), cfg.limit)
    stale = {p: set(ids) for p, ids in done.stale.items()}
    for part, ids in _pseudo_rows(listing, done).items():
        stale.setdefault(part, set()).update(ids)
    retried = _retried(shards, listing.root, done) if cfg.retry_errors else {}
    return JobPlan(shards, listing, done.num_rows, stale, retried)


def _list_input(cfg: LabelJobConfig) -> read.Listing:
    include, exclude = read.parse_globs(cfg.include), read.parse_globs(cfg.exclude)
    try:
        listing = read.list_inputs(cfg.input, include, exclude)
    except OSError as e:
        raise ConfigError(
            f"--input {cfg.input}: {e}. Check the URI and, for S3, the AWS_* environment."
        ) from e
    if not listing.images and not listing.files:
        raise ConfigError(
            f"--input {cfg.input}: no images, .tar or .parquet files found "
            f"({len(listing.other)} other files, {listing.excluded} excluded by "
            "--include/--exclude or hidden); point it at a folder, prefix or glob that holds "
            "some, or loosen --include/--exclude."
        )
    read.check_image_column(listing.files, cfg.image_column)
    return listing


def _load_matching(cfg: LabelJobConfig, model: dict[str, Any]) -> DoneIndex:
    try:
        done = load_done(cfg.output)
    except ValueError as e:
        raise ConfigError(f"--output {cfg.output}: {e}") from e
    previous = done.fingerprint
    if previous is not None and previous != write.fingerprint(cfg.class_names, model):
        raise ConfigError(
            f"--output {cfg.output} holds labels made with another vocabulary or model; "
            "pass --overwrite to replace them or choose a new --output."
        )
    return done


def _todo_shards(
    cfg: LabelJobConfig, listing: read.Listing, done: DoneIndex
) -> list[read.ShardSpec]:
    """Shards of the images that need a row: tar/Parquet files first, then loose images."""
    retry = cfg.retry_errors
    shards = []
    for spec in listing.files:
        have = done.source_ids.get(spec.shard_id, set())
        skip = sorted(i for i in have if not done.needs_row(i, retry_errors=retry))
        total = done.source_totals.get(spec.shard_id)
        if total is None or len(skip) < total:
            shards.append(replace(spec, skip=tuple(skip)))
    images = [
        u
        for u in listing.images
        if done.needs_row(read.relative(u, listing.root), retry_errors=retry)
    ]
    return shards + read.image_shards(images, listing.root, cfg.shard_size)


def _retried(shards: list[read.ShardSpec], root: str, done: DoneIndex) -> dict[str, set[str]]:
    """``{part: error ids}`` that the planned shards relabel (their old rows are dropped)."""
    ids: set[str] = set()
    for spec in shards:
        if spec.kind == read.KIND_IMAGES:
            ids.update(read.relative(u, root) for u in spec.uris)
        else:
            ids.update(done.source_ids.get(spec.shard_id, set()) - set(spec.skip))
    retried: dict[str, set[str]] = defaultdict(set)
    for image_id in ids:
        if done.status.get(image_id) == schema.STATUS_ERROR:
            retried[done.owner[image_id]].add(image_id)
    return dict(retried)


def _pseudo_rows(listing: read.Listing, done: DoneIndex) -> dict[str, set[str]]:
    """Rows ``<file>#unreadable`` / ``<file>#empty`` of tar/Parquet files that have real rows
    now (a retried file became readable): they no longer stand for the file."""
    stale: dict[str, set[str]] = defaultdict(set)
    for spec in listing.files:
        ids = done.source_ids.get(spec.shard_id, set())
        rel = read.relative(spec.uris[0], listing.root)
        pseudo = ids & {f"{rel}#unreadable", f"{rel}#empty"}
        if pseudo and len(ids) > len(pseudo):
            for image_id in pseudo:
                stale[done.owner[image_id]].add(image_id)
    return dict(stale)


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
