"""Driver-side bookkeeping: group streamed rows per shard, detect completion, log progress."""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema

logger = logging.getLogger(__name__)


class ShardCollector:
    """Buffers result rows until every row of a shard has arrived.

    Each row carries ``shard_size``; duplicates (same image id, e.g. from a retried task) are
    counted once.
    """

    def __init__(self) -> None:
        self._parts: dict[str, list[pa.Table]] = defaultdict(list)
        self._ids: dict[str, set[str]] = defaultdict(set)

    def add(self, table: pa.Table) -> list[tuple[str, list[pa.Table]]]:
        """Add a result batch; return ``(shard_id, parts)`` for each shard it completed."""
        done = []
        for shard_id in pc.unique(table[schema.SHARD_ID]).to_pylist():
            part = table.filter(pc.equal(table[schema.SHARD_ID], shard_id))
            self._parts[shard_id].append(part)
            self._ids[shard_id].update(part[schema.IMAGE_ID].to_pylist())
            if len(self._ids[shard_id]) >= part[schema.SHARD_SIZE][0].as_py():
                done.append((shard_id, self._parts.pop(shard_id)))
                del self._ids[shard_id]
        return done

    @property
    def pending(self) -> list[str]:
        """Shards with some but not all rows received."""
        return sorted(self._parts)


class ProgressLog:
    """Logs one line per finished shard and a heartbeat while rows stream in.

    Args:
        num_shards: shards this run will write.
        heartbeat_s: minimum seconds between heartbeat lines.
    """

    def __init__(self, num_shards: int, heartbeat_s: float = 15.0) -> None:
        self.num_shards = num_shards
        self.start = time.monotonic()
        self.images = 0
        self.errors = 0
        self.shards = 0
        self._heartbeat_s = heartbeat_s
        self._last_log = self.start

    @property
    def elapsed_s(self) -> float:
        """Seconds since construction."""
        return time.monotonic() - self.start

    @property
    def images_per_s(self) -> float:
        """Mean throughput so far."""
        return self.images / max(self.elapsed_s, 1e-9)

    def rows(self, table: pa.Table) -> None:
        """Count a result batch; log a heartbeat when due."""
        self.images += table.num_rows
        self.errors += pc.sum(pc.equal(table[schema.STATUS], schema.STATUS_ERROR)).as_py() or 0
        now = time.monotonic()
        if now - self._last_log >= self._heartbeat_s:
            self._last_log = now
            logger.info("%d images so far, %.1f images/s", self.images, self.images_per_s)

    def shard_done(self, shard_id: str, num_rows: int, num_errors: int) -> None:
        """Log a finished shard."""
        self.shards += 1
        self._last_log = time.monotonic()
        logger.info(
            "[%d/%d shards] %s: %d rows, %d errors | %d images (%d errors), %.1f images/s, %.0f s",
            self.shards,
            self.num_shards,
            shard_id,
            num_rows,
            num_errors,
            self.images,
            self.errors,
            self.images_per_s,
            self.elapsed_s,
        )
