"""What ZegCLIP and ZegOT share: sigmoid mask logits scored the official ZegCLIP way.

Both families produce pre-sigmoid class logits at patch resolution (``mask_logits``) and take
the official test-time path from there: short-side resize and ImageNet normalisation, sliding
windows of 512 with stride 426, upsampling to the crop size, sigmoid, the inductive seen-class
shift, and averaging of overlapping windows.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zegclip.models.scorer import DenseScorer
from zegclip.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize_tensor,
    preprocess,
    slide_windows,
)

# Pixels whose best class score is under 0.5 are left unlabelled (255) by default: ZegCLIP trains
# each class channel as an independent sigmoid classifier (focal + dice), and 0.5 is where every
# one of them says "not my class". Evaluation passes min_score=None to reproduce paper metrics.
DEFAULT_MIN_SCORE = 0.5


class MaskLogitScorer(DenseScorer):
    """A :class:`DenseScorer` over sigmoid mask logits; subclasses provide :meth:`mask_logits`.

    The subclass's ``config`` must have ``short_side``, ``crop_size``, ``stride``,
    ``seen_classes`` and ``seen_shift``.
    """

    default_min_score = DEFAULT_MIN_SCORE

    @abstractmethod
    def mask_logits(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) crops, (C, ...) embeddings -> (B, C, H/patch, W/patch) float32 logits."""

    def seen_mask(self, names: Sequence[str]) -> np.ndarray:
        """(S,) bool: which vocabulary rows are seen classes (case-insensitive name match)."""
        seen = {n.casefold() for n in self.config.seen_classes}
        return np.array([n.casefold() in seen for n in names], dtype=bool)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """HWC uint8 RGB -> (1, 3, H, W): official short-side resize, ImageNet normalisation."""
        return preprocess(image, self.config.short_side)

    @property
    def short_side(self) -> int:
        """Test-time short side (512 officially)."""
        return self.config.short_side

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 tensor from :meth:`prepare` -> (1, 3, H, W) ImageNet-normalised."""
        return normalize_tensor(image, IMAGENET_MEAN, IMAGENET_STD)

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Sliding windows (y1, y2, x1, x2) of :meth:`slide_scores`."""
        return slide_windows(height, width, self.config.crop_size, self.config.stride)

    def crop_scores(
        self, crops: torch.Tensor, text_emb: torch.Tensor, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sigmoid scores of each crop at the crop's size, seen classes shifted down.

        Args:
            crops: (B, 3, h, w). text_emb: (C, ...). seen: optional (C,) bool (the predictor
                passes None when no row is seen).

        Returns:
            (B, C, h, w) float32.
        """
        logits = self.mask_logits(crops, text_emb).float()
        # Official order: upsample to the fixed training size, sigmoid and shift there, then
        # resize to the crop (a no-op for the 512 crops official preprocessing produces).
        size = (self.config.crop_size, self.config.crop_size)
        scores = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).sigmoid()
        if seen is not None:  # an all-False mask shifts by 0: no host check of its values
            shift = seen.to(scores.device, scores.dtype).view(1, -1, 1, 1) * self.config.seen_shift
            scores = scores - shift
        if scores.shape[-2:] != crops.shape[-2:]:
            scores = F.interpolate(
                scores, size=crops.shape[-2:], mode="bilinear", align_corners=False
            )
        return scores

    def slide_scores(
        self, images: torch.Tensor, text_emb: torch.Tensor, *, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """mmseg sliding-window inference (crop 512, stride 426), averaging per-crop scores.

        Args:
            images: (B, 3, H, W) preprocessed images (see :func:`zegclip.preprocess`).
            text_emb: (C, ...) class embeddings.
            seen: (C,) bool; these classes get ``-seen_shift`` per crop (inductive checkpoints).

        Returns:
            (B, C, H, W) float32 averaged scores.
        """
        b, _, h, w = images.shape
        total = images.new_zeros((b, text_emb.shape[0], h, w), dtype=torch.float32)
        count = images.new_zeros((1, 1, h, w), dtype=torch.float32)
        for y1, y2, x1, x2 in self.windows(h, w):
            crop = images[:, :, y1:y2, x1:x2]
            total[:, :, y1:y2, x1:x2] += self.crop_scores(crop, text_emb, seen)
            count[:, :, y1:y2, x1:x2] += 1
        return total / count
