"""Where and in which precision models run: device resolution and mixed-precision autocast."""

from __future__ import annotations

import contextlib

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
