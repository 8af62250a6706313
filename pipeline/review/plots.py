"""Report plots with matplotlib (Agg backend, PNG files, no display or network needed).

Class names are untrusted text: matplotlib's mathtext is switched off so ``$...$`` in a name is
drawn literally instead of being parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_BARS = 40  # classes shown in a bar chart; the HTML table lists all of them
DPI = 96


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _style() -> dict[str, object]:
    return {"text.parse_math": False, "font.size": 9, "axes.spines.top": False}


def class_bars(
    path: Path,
    names: Sequence[str],
    values: Sequence[float],
    colours: np.ndarray,
    *,
    title: str,
    xlabel: str,
) -> tuple[float, float]:
    """Horizontal bar chart of one value per class, largest first (top ``MAX_BARS``).

    Args:
        path: PNG file to write.
        names: (C,) class names.
        values: (C,) values, e.g. pixel counts.
        colours: (C, 3) uint8 class colours (the overlay palette).

    Returns:
        The value axis limits (from 0; ``(0, 1)`` when every value is 0).
    """
    plt = _pyplot()
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")[:MAX_BARS]
    order = order[::-1]  # largest on top
    shown = len(order)
    with plt.rc_context(_style()):
        fig, ax = plt.subplots(figsize=(7, 1.0 + 0.22 * max(shown, 3)), dpi=DPI)
        ax.barh(
            range(shown),
            [values[i] for i in order],
            color=[tuple(colours[i] / 255.0) for i in order],
            edgecolor="#333333",
            linewidth=0.4,
        )
        ax.set_yticks(range(shown), [names[i] for i in order])
        _count_axis(ax.xaxis, max((values[i] for i in order), default=0), ax.set_xlim)
        if not any(values[i] for i in order):
            _say(ax, "nothing labelled")
        limits = ax.get_xlim()
        suffix = f" (top {shown} of {len(names)})" if shown < len(names) else ""
        ax.set_title(title + suffix)
        ax.set_xlabel(xlabel)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)
    return limits


def _count_axis(axis, top: float, set_lim) -> None:
    """Counts axis from 0 with integer ticks; ``0..1`` when everything is 0 (matplotlib would
    centre an empty range on 0, e.g. -0.04..0.04)."""
    from matplotlib.ticker import MaxNLocator

    set_lim(0, top * 1.05 if top > 0 else 1)
    axis.set_major_locator(MaxNLocator(integer=True))


def _say(ax, text: str) -> None:
    """A centred note on an empty plot."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#666666")


def histogram(
    path: Path, values: np.ndarray, *, title: str, xlabel: str, empty: str, bins: int = 20
) -> tuple[float, float]:
    """Histogram of the finite ``values`` (N,) in [0, 1] written as PNG to ``path``.

    NaN values are left out (e.g. images without a labelled pixel have no mean confidence);
    with none left, the plot says ``empty``. Returns the count axis limits (from 0).
    """
    plt = _pyplot()
    finite = values[np.isfinite(values)]
    with plt.rc_context(_style()):
        fig, ax = plt.subplots(figsize=(7, 3), dpi=DPI)
        counts, _, _ = ax.hist(
            finite, bins=bins, range=(0.0, 1.0), color="#4c72b0", edgecolor="white"
        )
        _count_axis(ax.yaxis, counts.max(initial=0), ax.set_ylim)
        if finite.size == 0:
            _say(ax, empty)
        limits = ax.get_ylim()
        ax.set_title(f"{title} (n = {finite.size})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("images")
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)
    return limits


def threshold_sweep(
    path: Path,
    thresholds: np.ndarray,
    curves: dict[str, np.ndarray],
    *,
    target: float,
    chosen: float | None,
) -> None:
    """Line plot of metrics (e.g. precision, coverage, mIoU, each (T,) in [0, 1]) against the
    unlabelled threshold, with the target precision and the chosen threshold marked."""
    plt = _pyplot()
    with plt.rc_context(_style()):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=DPI)
        for name, values in curves.items():
            ax.plot(thresholds, values, marker="o", markersize=3, label=name)
        ax.axhline(target, color="#999999", linestyle="--", label=f"target precision {target:g}")
        if chosen is not None:
            ax.axvline(chosen, color="#d62728", linestyle=":", label=f"recommended {chosen:g}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("unlabelled threshold (min score)")
        ax.set_title("Threshold sweep on the labelled subset")
        ax.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)
