"""Checks on a rendered review page that a figure is never missing.

A regular module so that the unit tests (HTML string) and the browser tests (the page source
Chromium loaded) use one copy.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# what a missing value looks like once formatted: Python's None, float NaN, JSON null, "undefined"
MISSING = re.compile(r"\b(None|nan|NaN|null|undefined)\b")
FIGURE_CLASSES = ("figures",)  # <div class="figures"> of each gallery card
FIGURE_TABLES = ("summary", "classes")  # table ids whose every cell is a figure (not free text)


class _Cells(HTMLParser):
    """Collects the text of every ``<td>`` of the figure tables and of every element with a
    figure class (error messages and image ids are free text and may say "None")."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []  # (where, text)
        self._open: list[list] = []  # [tag, where, text parts]
        self._row_label = ""
        self._table = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
        in_figures = tag == "td" and self._table in FIGURE_TABLES
        if in_figures or any(c in FIGURE_CLASSES for c in classes):
            self._open.append([tag, f"{tag}.{'.'.join(classes)} after {self._row_label!r}", []])
        if tag == "th":
            self._open.append(["th", "", []])

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            kind, where, parts = self._open.pop()
            text = "".join(parts).strip()
            if kind == "th":
                self._row_label = text
            else:
                self.cells.append((where, text))

    def handle_data(self, data: str) -> None:
        for entry in self._open:
            entry[2].append(data)


def missing_figures(html: str) -> list[str]:
    """Table cells and card figures that are blank or read None/nan/null (empty list: none)."""
    parser = _Cells()
    parser.feed(html)
    return [
        f"{where}: {text!r}" for where, text in parser.cells if not text or MISSING.search(text)
    ]
