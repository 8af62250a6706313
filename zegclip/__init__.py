"""ZegCLIP-family zero-shot semantic segmentation on open_clip (no mmseg, no ray).

Public API::

    model = zegclip.load_model(path, device="cpu")        # ours (.safetensors) or official .pth
    x = zegclip.preprocess(image_rgb_uint8)                # (1, 3, H, W) float32
    emb = model.encode_vocabulary(names, templates=["a photo of a {}"])   # (C, D)
    logits = model.mask_logits(x_512, emb)                 # (B, C, 32, 32)
    scores = model.slide_scores(x, emb, seen=seen_mask)    # (B, C, H, W)

Labelling jobs use :class:`LabelerSpec` with :func:`encode_vocabulary_for` (driver, once) and
:func:`build_predictor` (each replica).
"""

import importlib
import sys
import types
from importlib.abc import MetaPathFinder
from typing import Any

# Public name -> the module defining it. Imported on first use (PEP 562), so ``import zegclip``
# and the jobs' ``--help`` do not pay for torch and open_clip.
_EXPORTS = {
    "ClipSpec": "zegclip.clip",
    "WeightsError": "zegclip.clip",
    "CheckpointError": "zegclip.io.checkpoint",
    "save_checkpoint": "zegclip.io.checkpoint",
    "load_model": "zegclip.io.registry",
    "LabelerSpec": "zegclip.labeler",
    "build_predictor": "zegclip.labeler",
    "check_spec": "zegclip.labeler",
    "describe": "zegclip.labeler",
    "encode_vocabulary_for": "zegclip.labeler",
    "image_preparer": "zegclip.labeler",
    "min_score_in_use": "zegclip.labeler",
    "DenseScorer": "zegclip.models.scorer",
    "count_trainable": "zegclip.models.scorer",
    "build_zegclip": "zegclip.models.zegclip.build",
    "ZegCLIPConfig": "zegclip.models.zegclip.config",
    "ZegCLIP": "zegclip.models.zegclip.model",
    "Prediction": "zegclip.predictor",
    "SegPredictor": "zegclip.predictor",
    "preprocess": "zegclip.preprocess",
    "check_checkpoint": "zegclip.validate",
    "check_choice": "zegclip.validate",
    "check_clip_model": "zegclip.validate",
    "check_clip_source": "zegclip.validate",
    "check_device": "zegclip.validate",
    "Vocabulary": "zegclip.vocab",
    "VocabularyError": "zegclip.vocab",
    "load_vocabulary": "zegclip.vocab",
}


def __getattr__(name: str) -> Any:
    """A public name or a submodule (``zegclip.clip``), imported when first asked for."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """``zegclip.preprocess`` is the function, as before the lazy exports: importing the
    submodule of the same name would otherwise rebind the package attribute to the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if _EXPORTS.get(name) == f"{__name__}.{name}" and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


class _TorchvisionShim(MetaPathFinder):
    """Runs ``ensure_torchvision_importable`` just before the first ``import torchvision``
    (open_clip imports it), whichever zegclip module gets there first."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname != "torchvision":
            return None
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch.__spec__, "_initializing", False):
            return None  # torch itself looks for torchvision while it loads: too early
        from zegclip._torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # idempotent, and safe to re-enter
        return None  # the regular finders import it


if "torchvision" not in sys.modules and not any(
    isinstance(f, _TorchvisionShim) for f in sys.meta_path
):
    sys.meta_path.insert(0, _TorchvisionShim())

__all__ = [
    "CheckpointError",
    "DenseScorer",
    "ClipSpec",
    "LabelerSpec",
    "Prediction",
    "SegPredictor",
    "Vocabulary",
    "VocabularyError",
    "WeightsError",
    "ZegCLIP",
    "ZegCLIPConfig",
    "build_predictor",
    "image_preparer",
    "min_score_in_use",
    "build_zegclip",
    "check_checkpoint",
    "check_choice",
    "check_clip_model",
    "check_clip_source",
    "check_device",
    "check_spec",
    "count_trainable",
    "describe",
    "encode_vocabulary_for",
    "load_model",
    "load_vocabulary",
    "preprocess",
    "save_checkpoint",
]
