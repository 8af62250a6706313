"""The only contract between the pipeline and a model family.

The pipeline never imports torch or ``zegclip``. ``jobs/label.py`` hands it two callables:

* ``encode_vocabulary() -> np.ndarray`` (S, ...) float32 (one row per class or synonym; the
  layout is the model's business), run once per job on the driver;
  the result is put in the Ray object store and shared with every actor.
* ``predictor_factory(class_embeddings) -> Predictor``, called once per actor in ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np


class PredictionLike(Protocol):
    """Per-image model output.

    Attributes:
        label_map: (H, W) uint8 (<= 255 classes) or uint16; 255 / 65535 = unlabelled.
        confidence: (H, W) score of the chosen class: float32 in [0, 1], or uint8
            ``round(conf * 255)`` (then the prediction also has ``confidence_sums`` (C,) float64,
            the per-class sums of the unquantised confidence).
        class_counts: (C,) int64 pixels per class; sums to H*W minus unlabelled pixels.
    """

    label_map: np.ndarray
    confidence: np.ndarray
    class_counts: np.ndarray


class Predictor(Protocol):
    """Segments batches of images against a fixed vocabulary."""

    def predict(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[PredictionLike]:
        """One prediction per image.

        Args:
            images: HWC uint8 RGB arrays of any sizes (prepared ones when ``sizes`` is given).
            sizes: (H, W) of the original images, when an ``ImagePreparer`` resized them.
        """
        ...


PredictorFactory = Callable[[np.ndarray], Predictor]
# Optional: the model's CPU preprocessing (HWC uint8 -> HWC uint8), run in the decode tasks;
# the predictor is then called as ``predict(images, sizes)`` with the original (H, W) sizes.
ImagePreparer = Callable[[np.ndarray], np.ndarray]
VocabularyEncoder = Callable[[], np.ndarray]
