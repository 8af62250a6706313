"""ZegCLIP (Zhou et al., CVPR 2023): prompted frozen CLIP ViT + relationship descriptor + decoder.

Public surface (also the conformance surface checked against the official implementation)::

    emb = model.encode_vocabulary(names, templates=["a photo of a {}"])   # (C, D) float32
    logits = model.mask_logits(x_512, emb)      # (B, C, 32, 32) pre-sigmoid, last decoder layer
    scores = model.slide_scores(x, emb, seen=seen_mask)   # (B, C, H, W) sigmoid, seen - 0.1
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import nn

from .backbone import PromptedViT
from .config import ZegCLIPConfig
from .decoder import SegHead
from .preprocess import preprocess, slide_windows
from .text import Tokenizer, encode_with_tower

# Pixels whose best class score is under 0.5 are left unlabelled (255) by default: ZegCLIP trains
# each class channel as an independent sigmoid classifier (focal + dice), and 0.5 is where every
# one of them says "not my class". Evaluation passes min_score=None to reproduce paper metrics.
DEFAULT_MIN_SCORE = 0.5


class ZegCLIP(nn.Module):
    """The ZegCLIP segmentor.

    Args:
        config: architecture and inference settings.
        backbone: prompted frozen ViT.
        head: relationship descriptor + decoder.
        text: open_clip CLIP used only for its text tower (its ``visual`` removed); None in
            inference replicas that receive precomputed class embeddings.
        tokenizer: the text tower's tokenizer.
    """

    def __init__(
        self,
        config: ZegCLIPConfig,
        backbone: PromptedViT,
        head: SegHead,
        *,
        text: CLIP | None = None,
        tokenizer: Tokenizer | None = None,
    ):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.head = head
        self.text = text
        self.tokenizer = tokenizer

    @property
    def clip_visual(self) -> nn.Module:
        """The frozen open_clip ViT (checkpoints embed it under ``clip.visual.*``)."""
        return self.backbone.visual

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Prompts, prompt projection/norm and head: what training changes and checkpoints store."""
        return {k: v for k, v in self.state_dict().items() if is_trainable_key(k)}

    @property
    def default_templates(self) -> tuple[str, ...]:
        """Templates the checkpoint was trained with."""
        return self.config.templates

    default_min_score = DEFAULT_MIN_SCORE

    def seen_mask(self, names: Sequence[str]) -> np.ndarray:
        """(S,) bool: which vocabulary rows are seen classes (case-insensitive name match)."""
        seen = {n.casefold() for n in self.config.seen_classes}
        return np.array([n.casefold() in seen for n in names], dtype=bool)

    def drop_text_tower(self) -> None:
        """Free the text tower in replicas that only consume precomputed embeddings."""
        self.text = None

    @torch.no_grad()
    def encode_vocabulary(
        self, names: Sequence[str], templates: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Class names to (C, D) float32 L2-normalised embeddings (templates averaged).

        Raises:
            RuntimeError: the text tower was dropped.
        """
        return encode_with_tower(
            self.text, self.tokenizer, names, templates or self.config.templates
        )

    def mask_logits(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Last decoder layer's head-averaged pre-softmax attention logits.

        Args:
            images: (B, 3, H, W) ImageNet-normalised crops (512 x 512 officially).
            text_emb: (C, D) L2-normalised class embeddings.

        Returns:
            (B, C, H/patch, W/patch) float32 logits.
        """
        global_emb, patch_emb = self.backbone(images)
        return self.head(global_emb, patch_emb, text_emb.to(images.device))

    def preprocess(self, image) -> torch.Tensor:
        """HWC uint8 RGB -> (1, 3, H, W): official short-side resize, ImageNet normalisation."""
        return preprocess(image, self.config.short_side)

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Sliding windows (y1, y2, x1, x2) of :meth:`slide_scores`."""
        return slide_windows(height, width, self.config.crop_size, self.config.stride)

    def crop_scores(
        self, crop: torch.Tensor, text_emb: torch.Tensor, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sigmoid scores of one crop at the crop's size, seen classes shifted down.

        Args:
            crop: (B, 3, h, w). seen: optional (C,) bool.

        Returns:
            (B, C, h, w) float32.
        """
        logits = self.mask_logits(crop, text_emb).float()
        # Official order: upsample to the fixed training size, sigmoid and shift there, then
        # resize to the crop (a no-op for the 512 crops official preprocessing produces).
        size = (self.config.crop_size, self.config.crop_size)
        scores = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).sigmoid()
        if seen is not None and bool(seen.any()):
            shift = seen.to(scores.device, scores.dtype).view(1, -1, 1, 1) * self.config.seen_shift
            scores = scores - shift
        if scores.shape[-2:] != crop.shape[-2:]:
            scores = F.interpolate(
                scores, size=crop.shape[-2:], mode="bilinear", align_corners=False
            )
        return scores

    def slide_scores(
        self, images: torch.Tensor, text_emb: torch.Tensor, *, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """mmseg sliding-window inference (crop 512, stride 426), averaging per-crop scores.

        Args:
            images: (B, 3, H, W) preprocessed images (see :func:`zegclip.preprocess`).
            text_emb: (C, D) class embeddings.
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


def is_trainable_key(key: str) -> bool:
    """True for state-dict keys of parameters ZegCLIP trains (everything outside frozen CLIP)."""
    return key.startswith("head.") or (key.startswith("backbone.") and "prompt" in key)
