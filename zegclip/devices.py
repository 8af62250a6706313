"""Where and in which precision models run: device resolution, mixed-precision autocast, and
what lets several threads share one model on one device (a CUDA stream per thread, device
caches built once and visible to every stream)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA (measured 5.8x fp32 on an H200), ``fp32`` elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


PAMR_PRECISIONS = ("fp32", "compute")


def refine_dtype(device: torch.device, precision: str, pamr_precision: str) -> torch.dtype | None:
    """The dtype the refinement (PAMR) propagates in: None (float32, the papers') unless
    ``pamr_precision`` is ``compute`` and the model runs in bf16/fp16 on CUDA (CPU always runs
    float32, as :func:`autocast`).

    Raises:
        ValueError: unknown ``pamr_precision`` or ``precision``.
    """
    if pamr_precision not in PAMR_PRECISIONS:
        raise ValueError(
            f"pamr_precision must be one of {', '.join(PAMR_PRECISIONS)}, not {pamr_precision!r}"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if pamr_precision == "fp32" or device.type != "cuda":
        return None
    return PRECISIONS[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` (``fp32``, ``bf16``, ``fp16``) on CUDA; CPU always runs float32.

    Raises:
        ValueError: unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    dtype = PRECISIONS[precision]
    if device.type != "cuda" or dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype=dtype)


_CACHE_LOCK = threading.RLock()  # builds of device caches (rare: once per key)
_THREAD = threading.local()  # this thread's CUDA streams, by device
Cached = TypeVar("Cached", torch.Tensor, tuple[torch.Tensor, ...])


def cached_on_device(cache: dict, key: Hashable, build: Callable[[], Cached]) -> Cached:
    """``cache[key]``, a tensor or a tuple of tensors built by ``build()`` the first time, safe
    to read from any thread and CUDA stream: built under one lock, and on CUDA the building
    stream is waited for before the entry becomes visible (a one-time cost per key), so no
    stream reads it half-written. Entries are never freed, so the caching allocator never
    hands their memory to another stream.

    Inside ``torch.compile`` tracing (no locks, no syncs there) it is a plain memo: compiled
    forwards run one at a time (``SegPredictor``) and warm-up fills the cache before any
    second thread runs.
    """
    value = cache.get(key)
    if value is not None:
        return value
    if torch.compiler.is_compiling():
        value = cache[key] = build()
        return value
    with _CACHE_LOCK:
        value = cache.get(key)
        if value is None:
            value = build()
            tensors = value if isinstance(value, tuple) else (value,)
            for device in {t.device for t in tensors if t.is_cuda}:
                torch.cuda.current_stream(device).synchronize()
            cache[key] = value
    return value


def thread_stream(device: torch.device) -> contextlib.AbstractContextManager:
    """This thread's own CUDA stream on ``device`` as the current stream (created on the
    thread's first call, kept for the thread's life), so that calls from several threads queue
    their kernels and copies independently; a no-op context off CUDA."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    streams = _THREAD.__dict__.setdefault("streams", {})
    key = device.index if device.index is not None else torch.cuda.current_device()
    if key not in streams:
        streams[key] = torch.cuda.Stream(device=torch.device("cuda", key))
    return torch.cuda.stream(streams[key])
