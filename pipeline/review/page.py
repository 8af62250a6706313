"""Render ``index.html`` with Jinja2, autoescaping every value.

Everything that comes from the run (image ids, source URIs, errors, class names, config values)
is inserted as text through the template's autoescaping; nothing here builds HTML by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE = "report.html"


def render(context: dict[str, Any]) -> str:
    """The report page for ``context`` (see the template for the keys it reads)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,  # all values, not only *.html names: the page has no trusted markup
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template(TEMPLATE).render(**context)


def summary_items(summary: dict[str, Any], uri: str) -> list[tuple[str, str]]:
    """``(label, text)`` pairs for the run summary table, from ``run.json``."""
    counts = summary.get("counts", {})
    totals = summary.get("output_totals", {})
    config = summary.get("config", {})
    items = [
        ("run", uri),
        ("run id", summary.get("run_id")),
        ("finished at", summary.get("finished_at")),
        ("input", config.get("input")),
        ("model", json.dumps(summary["model"], sort_keys=True) if "model" in summary else None),
        ("classes", len(summary.get("vocabulary", []))),
        ("images in output", totals.get("images")),
        ("error rows in output", totals.get("error")),
        ("images this run", counts.get("images")),
        (
            "shards written / skipped",
            f"{counts.get('shards_written')} / {counts.get('shards_skipped')}",
        ),
        ("images per second", _fmt(summary.get("images_per_s"))),
        ("min score", config.get("min_score")),
    ]
    return [(k, "" if v is None else str(v)) for k, v in items]


def _fmt(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


def percent(value: float) -> str:
    """``"12.3%"``, or ``"n/a"`` for NaN."""
    return "n/a" if value != value else f"{100 * value:.1f}%"


def decimal(value: float | None) -> str:
    """Three decimals, or ``"n/a"`` for None / NaN."""
    return "n/a" if value is None or value != value else f"{value:.3f}"
