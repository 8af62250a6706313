"""What the output already holds: the index a run plans from (read from markers only).

For every image id with a row: its status and the part holding it; for every input shard: its
total row count and the ids already labelled; and the rows that a newer part supersedes
(``--retry-errors`` relabelled them) and that still have to be dropped from older parts.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pipeline import schema, write

logger = logging.getLogger(__name__)


@dataclass
class DoneIndex:
    """Finished work under one output.

    Attributes:
        status: image id -> ``"ok"`` / ``"error"`` of its current (newest) row.
        owner: image id -> part holding its current row.
        source_ids: input shard id -> image ids that have a row.
        source_totals: input shard id -> rows the whole shard emits.
        stale: part -> ids whose rows a newer part supersedes (to drop).
        markers: part -> its marker.
    """

    status: dict[str, str] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    source_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    source_totals: dict[str, int] = field(default_factory=dict)
    stale: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    markers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the (first) finished part; None when nothing is done."""
        return next((m.get("fingerprint") for m in self.markers.values()), None)

    @property
    def num_rows(self) -> int:
        """Images with a row."""
        return len(self.status)

    def needs_row(self, image_id: str, *, retry_errors: bool) -> bool:
        """True when ``image_id`` has no row, or an error row and ``retry_errors``."""
        status = self.status.get(image_id)
        return status is None or (retry_errors and status == schema.STATUS_ERROR)

    def add(self, part: str, marker: dict[str, Any]) -> None:
        """Register one marker; markers must be added oldest first."""
        self.markers[part] = marker
        errors = set(marker.get("error_ids", ()))
        for source, ids in marker["ids"].items():
            self.source_ids[source].update(ids)
            for image_id in ids:
                previous = self.owner.get(image_id)
                if previous is not None and previous != part:
                    self.stale[previous].add(image_id)
                self.owner[image_id] = part
                self.status[image_id] = (
                    schema.STATUS_ERROR if image_id in errors else schema.STATUS_OK
                )
        self.source_totals.update(marker.get("sources", {}))


def _order(item: tuple[str, dict[str, Any]]) -> tuple[str, str]:
    part, marker = item
    return (marker.get("written_at", ""), part)


def load_done(output: str) -> DoneIndex:
    """Read every marker under ``output`` into a :class:`DoneIndex` (newest part wins)."""
    index = DoneIndex()
    for part, marker in sorted(write.read_markers(output).items(), key=_order):
        if "ids" not in marker:
            raise ValueError(
                f"{write.marker_uri(output, part)} predates schema 1.1 (no image ids); relabel "
                "into a new --output or pass --overwrite."
            )
        index.add(part, marker)
    return index
