"""Make PyPI's CUDA-built torchvision importable next to a CPU-only torch.

PyPI only ships CUDA builds of torchvision 0.28. Its ``_C.so`` links ``libtorch_cuda.so``, so on a
CPU torch build the C++ ops never register and ``import torchvision`` (and therefore
``import open_clip``) dies in ``torchvision/_meta_registrations.py`` with
``RuntimeError: operator torchvision::nms does not exist``.

open_clip needs only torchvision's pure-Python transforms, never its C++ detection ops. When the
compiled ops cannot load, we declare the two op schemas the meta registrations look up, so the
import succeeds; calling ``torchvision.ops.nms`` would still fail loudly (no kernel). When the real
library loads (CUDA torch, e.g. in ``infra/Dockerfile``), this function does nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None
_checking = False  # find_spec below re-enters through zegclip's import hook


def ensure_torchvision_importable() -> None:
    """Idempotently make ``import torchvision`` work on CPU-only torch builds."""
    global _checking
    if _library is not None or _checking or "torchvision" in sys.modules:
        return
    _checking = True
    try:
        _declare_missing_ops()
    finally:
        _checking = False


def _declare_missing_ops() -> None:
    global _library
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return  # not installed: open_clip's own import error will name it
    compiled = os.path.join(os.path.dirname(spec.origin), "_C.so")
    try:
        torch.ops.load_library(compiled)
        return
    except (OSError, RuntimeError, ImportError):
        pass
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
