"""ZegCLIP (Zhou et al., CVPR 2023): prompted frozen CLIP ViT + relationship descriptor + decoder.

Public surface (also the conformance surface checked against the official implementation)::

    emb = model.encode_vocabulary(names, templates=["a photo of a {}"])   # (C, D) float32
    logits = model.mask_logits(x_512, emb)      # (B, C, 32, 32) pre-sigmoid, last decoder layer
    scores = model.slide_scores(x, emb, seen=seen_mask)   # (B, C, H, W) sigmoid, seen - 0.1
"""

from __future__ import annotations

import torch
from open_clip.model import CLIP
from torch import nn

from zegclip.models.mask_scorer import MaskLogitScorer
from zegclip.models.zegclip.backbone import PromptedViT
from zegclip.models.zegclip.config import ZegCLIPConfig
from zegclip.models.zegclip.decoder import SegHead
from zegclip.text import Tokenizer


class ZegCLIP(MaskLogitScorer):
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
        super().__init__(text=text, tokenizer=tokenizer)
        self.config = config
        self.backbone = backbone
        self.head = head

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


def is_trainable_key(key: str) -> bool:
    """True for state-dict keys of parameters ZegCLIP trains (everything outside frozen CLIP)."""
    return key.startswith("head.") or (key.startswith("backbone.") and "prompt" in key)
