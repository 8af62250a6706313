"""Driver-side progress: images done, errors, images/s and ETA, from the per-part records.

Ray Data's own progress output (a block of per-operator bars every 10 s when the log is not a
terminal) is switched off in :func:`quiet_ray_data`; this line replaces it. On a terminal it is
rewritten in place; in a log file (Kubernetes, ``ray job logs``) one compact line is logged for
the first part, then at most every ``interval_s`` seconds, and at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

logger = logging.getLogger(__name__)

LOG_INTERVAL_S = 30.0


def quiet_ray_data() -> None:
    """Turn Ray Data's progress bars off in this driver, and its note saying they are off."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


class ProgressLog:
    """Counts finished output parts and reports the run's progress.

    Args:
        expected_images: images this run should label, when known in advance (for the ETA).
        stream: where a terminal's in-place line goes (default: stderr).
        interval_s: seconds between log lines when ``stream`` is not a terminal.
    """

    def __init__(
        self,
        expected_images: int | None,
        stream: TextIO | None = None,
        interval_s: float = LOG_INTERVAL_S,
    ) -> None:
        self.expected = expected_images
        self.stream = sys.stderr if stream is None else stream
        self.interval_s = interval_s
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.images = 0
        self.errors = 0
        self.parts = 0
        self._last_logged: float | None = None
        self._pending = False  # counted since the last line

    @property
    def elapsed_s(self) -> float:
        """Seconds since construction."""
        return time.monotonic() - self.start

    @property
    def images_per_s(self) -> float:
        """Mean throughput so far."""
        return self.images / max(self.elapsed_s, 1e-9)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the mean rate so far; None without an expected count or a rate."""
        if self.expected is None or self.images == 0:
            return None
        return max(self.expected - self.images, 0) / self.images_per_s

    def line(self) -> str:
        """``12/50 images, 1 error, 0.8 images/s, 45 s elapsed, ETA 48 s``."""
        total = "?" if self.expected is None else str(self.expected)
        eta = "" if self.eta_s is None else f", ETA {_duration(self.eta_s)}"
        return (
            f"{self.images}/{total} images, {self.errors} error{'s' * (self.errors != 1)}, "
            f"{self.images_per_s:.2f} images/s, {_duration(self.elapsed_s)} elapsed{eta}"
        )

    def part_done(self, part: str, num_rows: int, num_errors: int) -> None:
        """Count a written part (``part`` names its file, logged at debug level) and report."""
        self.parts += 1
        self.images += num_rows
        self.errors += num_errors
        self._pending = True
        logger.debug("wrote %s: %d rows, %d errors", part, num_rows, num_errors)
        if self.tty:
            self.stream.write(f"\r\x1b[K{self.line()}")  # \x1b[K clears the rest of the line
            self.stream.flush()
            self._pending = False
        elif self._last_logged is None or time.monotonic() - self._last_logged >= self.interval_s:
            self._log()

    def close(self) -> None:
        """End the terminal line, or log the final counts if the last line is older."""
        if self.tty:
            if self.parts:
                self.stream.write("\n")
                self.stream.flush()
        elif self._pending:
            self._log()

    def _log(self) -> None:
        logger.info("progress: %s", self.line())
        self._last_logged = time.monotonic()
        self._pending = False


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
