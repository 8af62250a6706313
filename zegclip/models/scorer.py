"""The one interface every model family implements: a dense scorer.

:class:`zegclip.predictor.SegPredictor` drives any :class:`DenseScorer`: it preprocesses each
image, cuts sliding windows, batches same-size crops through :meth:`DenseScorer.crop_scores`,
stitches them, calls :meth:`DenseScorer.refine` on the stitched scores, resizes them to the
image, calls :meth:`DenseScorer.activate`, and takes the argmax. The two hooks default to no-ops.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from zegclip.preprocess import prepare_image
from zegclip.text import Tokenizer, encode_with_tower


class DenseScorer(nn.Module, metaclass=ABCMeta):
    """Base class of ZegCLIP, ZegOT and the training-free frozen CLIP.

    Attributes:
        default_templates: prompt templates used when the caller names none.
        default_min_score: best-class score under which a pixel is unlabelled (None: off).
        text: the frozen CLIP text tower, or None in replicas fed precomputed embeddings.
        tokenizer: the text tower's tokenizer, or None with ``text``.
    """

    default_templates: tuple[str, ...] = ("{}",)
    default_min_score: float | None = None
    # Set when :meth:`activate` is a softmax over all rows of ``scale * scores``: the predictor
    # then computes that softmax itself, chunk by chunk over rows (bounded memory); None means
    # :meth:`activate` acts on each row independently and may be called on any subset of rows.
    row_softmax_scale: float | None = None

    def __init__(self, *, text: nn.Module | None = None, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.text = text
        self.tokenizer = tokenizer

    @torch.no_grad()
    def encode_vocabulary(
        self, names: Sequence[str], templates: Sequence[str] | None = None
    ) -> torch.Tensor:
        """S row names -> (S, D) float32 L2-normalised embeddings from the frozen text tower.

        Each template is filled with the name, encoded and L2-normalised; the mean over
        templates (default :attr:`default_templates`) is renormalised. ZegOT overrides this with
        its learned contexts and returns (S, N, D).

        Raises:
            RuntimeError: built without the text tower.
        """
        return encode_with_tower(
            self.text, self.tokenizer, names, templates or self.default_templates
        )

    @abstractmethod
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, H', W') float32 model input."""

    short_side: int  # the official test resize: short side of the preprocessed image

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The CPU half of :meth:`preprocess`: HWC uint8 RGB -> HWC uint8, short side resized
        (official cv2 bilinear, mmcv rounding). Picklable as ``resize_short_side`` with
        ``short_side``, so pipelines run it in their decode tasks.

        Raises:
            ValueError: not an HWC uint8 RGB array.
        """
        return prepare_image(image, self.short_side)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """The device half of :meth:`preprocess`: (H, W, 3) or (N, H, W, 3) uint8 tensor from
        :meth:`prepare`, on any device -> (1 or N, 3, H, W) float32, equal to ``preprocess`` of
        the original image(s)."""
        raise NotImplementedError(f"{type(self).__name__} preprocesses whole images only")

    @abstractmethod
    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Sliding windows (y1, y2, x1, x2) covering a preprocessed (height, width) image."""

    @abstractmethod
    def crop_scores(
        self, crops: torch.Tensor, text_emb: torch.Tensor, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 3, h, w) crops -> (B, S, h, w) float32 scores (confidences or logits).

        Args:
            crops: preprocessed crops of one size.
            text_emb: (S, ...) row embeddings from :meth:`encode_vocabulary`.
            seen: optional (S,) bool rows that get the inductive seen-class shift.
        """

    def seen_mask(self, names: Sequence[str]) -> np.ndarray:
        """(S,) bool rows that are seen (training) classes; none by default."""
        return np.zeros(len(names), dtype=bool)

    def refine(
        self, scores: torch.Tensor, images: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Hook on stitched (N, S, h, w) scores with the preprocessed (N, 3, h, w) images (or
        one image's (S, h, w) scores with its (1, 3, h, w) image); batched over images, it must
        give each image what it gives that image alone. ``dtype``: the precision it may work in
        (None: float32); the result keeps the scores' dtype. No-op."""
        return scores

    def activate(self, scores: torch.Tensor) -> torch.Tensor:
        """Hook on (..., S, H, W) scores at the original size (rows on dim -3), e.g. logits ->
        probabilities; no-op.

        Row-wise unless :attr:`row_softmax_scale` is set (then it must equal that softmax).
        """
        return scores

    def drop_text_tower(self) -> None:
        """Free the text tower in replicas that only consume precomputed embeddings."""
        self.text = None


def count_trainable(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
