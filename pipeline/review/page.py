"""Render ``index.html`` with Jinja2, autoescaping every value.

Everything that comes from the run (image ids, source URIs, errors, class names, config values)
is inserted as text through the template's autoescaping; nothing here builds HTML by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from pipeline.review.load import Totals

TEMPLATE = "report.html"


def render(context: dict[str, Any]) -> str:
    """The report page for ``context`` (see the template for the keys it reads)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,  # all values, not only *.html names: the page has no trusted markup
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template(TEMPLATE).render(**context)


NOT_RECORDED = "not recorded in run.json"
# model description keys (zegclip.labeler.LabelerSpec) -> row label; min_score has its own row
MODEL_FIELDS = {
    "checkpoint": "checkpoint",
    "clip_model": "CLIP model",
    "clip_pretrained": "CLIP pretrained weights",
    "clip_weights": "CLIP weights file",
    "method": "training-free method",
    "templates": "prompt templates",
    "background": "background words",
    "device": "device",
    "precision": "precision",
    "compile": "torch.compile",
    "pamr_precision": "PAMR precision",
}
CHECKPOINT_UNUSED = ("clip_model", "clip_pretrained", "clip_weights", "method", "background")


def summary_items(summary: dict[str, Any], uri: str, totals: Totals) -> list[tuple[str, str]]:
    """``(label, text)`` pairs for the run summary table: ``run.json`` and ``totals`` (the label
    files' figures). Every text is non-empty: a figure a run did not record says so."""
    items: list[tuple[str, Any]] = [("run", uri)]
    if summary:
        config = summary.get("config", {})
        items += [
            ("run id", summary.get("run_id")),
            ("finished at", summary.get("finished_at")),
            ("input", config.get("input")),
            *model_items(summary.get("model")),
            ("min score", min_score_text(summary)),
            ("classes", len(summary.get("vocabulary", []))),
        ]
    else:
        items.append(("run.json", "missing: the run has not finished (figures from label files)"))
    items += totals_items(totals)
    if summary:
        items += this_run_items(summary)
    return [(k, NOT_RECORDED if v is None or v == "" else str(v)) for k, v in items]


def totals_items(totals: Totals) -> list[tuple[str, str]]:
    """Rows for the label files' figures; an image is labelled when a pixel carries a class."""
    share = totals.labelled_pixels / totals.pixels if totals.pixels else float("nan")
    return [
        ("images in output", f"{totals.rows} ({totals.ok} ok, {totals.errors} error)"),
        ("labelled images", f"{totals.labelled} of {totals.ok} ok images have a labelled pixel"),
        (
            "labelled pixels",
            f"{percent(share)} of the ok images' pixels ({totals.labelled_pixels:,} of "
            f"{totals.pixels:,})",
        ),
    ]


def this_run_items(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rows for what the last run did (``run.json`` ``counts``, speed); None = not recorded."""
    counts = summary.get("counts", {})
    did = files = None
    if counts.get("images") is not None:
        did = f"{counts['images']} images ({counts.get('ok')} ok, {counts.get('error')} error)"
    if counts.get("parts_written") is not None:
        files = (
            f"{counts['parts_written']} label files written; "
            f"{counts.get('already_labelled', 0)} images already labelled, skipped"
        )
    speed = summary.get("images_per_s")
    return [
        ("labelled by the last run", did),
        ("label files of the last run", files),
        ("images per second", None if speed is None else f"{float(speed):.3f}"),
    ]


def model_items(model: Any) -> list[tuple[str, Any]]:
    """Readable rows for ``run.json``'s ``model`` (a ``LabelerSpec`` description, or any dict),
    in ``MODEL_FIELDS`` order, then any other key."""
    if not isinstance(model, dict) or not model:
        return [("model", None)]
    checkpoint = bool(model.get("checkpoint"))
    keys = [k for k in MODEL_FIELDS if k in model] + [k for k in model if k not in MODEL_FIELDS]
    rows = []
    for key in keys:
        value = model[key]
        if key == "min_score" or (checkpoint and key in CHECKPOINT_UNUSED):
            continue
        if key in MODEL_FIELDS and value in (None, [], ()):
            if key == "templates":
                value = "the model's default"
            elif key == "clip_pretrained" and not model.get("clip_weights"):
                value = "none (random weights)"
            else:
                continue
        rows.append((f"model: {MODEL_FIELDS.get(key, key)}", _readable(value)))
    return rows


def _readable(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ", ".join(_readable(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_readable(v)}" for k, v in value.items())
    return str(value)


def min_score_text(summary: dict[str, Any]) -> str:
    """The unlabelled threshold in effect and where it came from (``--min-score`` or default)."""
    used = summary.get("min_score")
    given = summary.get("config", {}).get("min_score")
    if isinstance(used, dict) and "value" in used:
        value = "none (no threshold)" if used["value"] is None else f"{used['value']:g}"
        return f"{value} (the model's default)" if used.get("default") else f"{value} (--min-score)"
    if given is not None:
        return f"{given:g} (--min-score)"
    return "the model's default (its value is not recorded by this run)"


def card_figures(confidence: float, labelled: float) -> str:
    """Caption figures of a gallery image: mean confidence and labelled share, or why none."""
    if confidence != confidence:  # NaN: no labelled pixel
        return "no labelled pixel"
    return f"mean confidence {decimal(confidence)} · labelled {percent(labelled)}"


def percent(value: float) -> str:
    """``"12.3%"``, or ``"n/a"`` for NaN."""
    return "n/a" if value != value else f"{100 * value:.1f}%"


def decimal(value: float | None) -> str:
    """Three decimals, or ``"n/a"`` for None / NaN."""
    return "n/a" if value is None or value != value else f"{value:.3f}"
