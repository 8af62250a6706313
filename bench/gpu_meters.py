"""What a GPU does while a level of ``bench/bench_gpu.py`` runs: busy %, memory, host syncs.

* :class:`BusySampler`: a thread that reads ``torch.cuda.utilization()`` (NVML: the share of
  the last sample period in which a kernel ran) and the GPU's used memory every ``period_s``;
  :meth:`BusySampler.busy_pct` / :meth:`BusySampler.peak_used_mib` over a time window. It sees
  the whole GPU, so it also measures Ray actors in other processes. Without CUDA or NVML
  (``pynvml``, from the ``nvidia-ml-py`` package) it records nothing and reports None.
* :func:`count_cuda_syncs`: synchronising CUDA calls of one ``fn()``, as
  ``torch.cuda.set_sync_debug_mode("warn")`` reports them (``.item()``, blocking copies between
  host and device, ``nonzero``...); None without CUDA (then see ``bench/dispatch_count.py``).
* :func:`peak_allocated_mib`: ``torch.cuda.max_memory_allocated`` in MiB, this process only.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable

import torch

MIB = 2**20


def _nvml_reading() -> tuple[float, float] | None:
    """(utilisation %, used MiB) of the current GPU, or None when NVML cannot answer."""
    try:
        busy = float(torch.cuda.utilization())
        used = getattr(torch.cuda, "device_memory_used", None)
        return busy, float(used()) / MIB if used else float("nan")
    except Exception:  # noqa: BLE001 - no pynvml, no driver, no permission: no reading
        return None


class BusySampler:
    """Context manager sampling the GPU in a daemon thread; ``samples`` are (t, busy %, MiB).

    Args:
        enabled: False (e.g. on CPU) records nothing.
        period_s: seconds between readings (NVML itself averages over 1/6 s to 1 s).
    """

    def __init__(self, enabled: bool, period_s: float = 0.05) -> None:
        self.enabled = enabled and torch.cuda.is_available() and _nvml_reading() is not None
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            reading = _nvml_reading()
            if reading is not None:
                self.samples.append((time.monotonic(), *reading))

    def __enter__(self) -> BusySampler:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def _window(self, t0: float | None, t1: float | None) -> list[tuple[float, float, float]]:
        lo, hi = t0 or float("-inf"), t1 or float("inf")
        return [s for s in self.samples if lo <= s[0] <= hi]

    def busy_pct(self, t0: float | None = None, t1: float | None = None) -> float | None:
        """Mean utilisation % of the samples taken between ``t0`` and ``t1`` (monotonic s)."""
        window = self._window(t0, t1)
        return sum(s[1] for s in window) / len(window) if window else None

    def peak_used_mib(self, t0: float | None = None, t1: float | None = None) -> float | None:
        """Largest used memory of the whole GPU (all processes) between ``t0`` and ``t1``."""
        window = [s[2] for s in self._window(t0, t1) if s[2] == s[2]]  # drop NaN
        return max(window) if window else None


def count_cuda_syncs(fn: Callable[[], object]) -> int | None:
    """Synchronising CUDA operations in one ``fn()`` (``set_sync_debug_mode("warn")``)."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(w.message) for w in caught)


def reset_peak(device: torch.device) -> None:
    """Start a new ``max_memory_allocated`` window (no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_allocated_mib(device: torch.device) -> float | None:
    """Peak memory this process allocated on ``device`` since :func:`reset_peak`; None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / MIB


def synchronize(device: torch.device) -> None:
    """Wait for ``device`` (no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
