"""Driver-side progress: one log line per written output part."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


class ProgressLog:
    """Logs one line per finished output part (the driver only sees these small records).

    Args:
        expected_images: images this run should label, when known in advance.
    """

    def __init__(self, expected_images: int | None) -> None:
        self.expected = expected_images
        self.start = time.monotonic()
        self.images = 0
        self.errors = 0
        self.parts = 0

    @property
    def elapsed_s(self) -> float:
        """Seconds since construction."""
        return time.monotonic() - self.start

    @property
    def images_per_s(self) -> float:
        """Mean throughput so far."""
        return self.images / max(self.elapsed_s, 1e-9)

    def part_done(self, part: str, num_rows: int, num_errors: int) -> None:
        """Count and log a written part."""
        self.parts += 1
        self.images += num_rows
        self.errors += num_errors
        total = "?" if self.expected is None else str(self.expected)
        logger.info(
            "[%d/%s images] %s: %d rows, %d errors | %d errors so far, %.1f images/s, %.0f s",
            self.images,
            total,
            part,
            num_rows,
            num_errors,
            self.errors,
            self.images_per_s,
            self.elapsed_s,
        )
