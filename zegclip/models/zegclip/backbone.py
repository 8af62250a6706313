"""CLIP ViT with deep visual prompt tuning (VPT-deep), as in ZegCLIP's VPTCLIPVisionTransformer.

The only module that reaches into open_clip's ViT internals (``conv1``, ``class_embedding``,
``positional_embedding``, ``ln_pre``, ``transformer.resblocks``, ``ln_post``, ``proj``); pinned to
open_clip 3.3, whose blocks hold an ``nn.MultiheadAttention`` (switched to sequence-first here).

Official semantics reproduced (``VPTCLIPVisionTransformer`` in the official repository's
``models/backbone/img_encoder.py``):
* token 0 is ``class_embedding + (pos[0] + class_embedding)``: the class embedding counted twice;
* the spatial positional grid is resized bilinearly (align_corners=False) to the patch grid;
* T prompt tokens ``dropout(prompt_proj(P_0))`` are inserted after token 0 *after* ``ln_pre``;
  before block i >= 1 they are replaced by ``dropout(prompt_proj(P_i))``;
* after the last block: ``prompt_norm`` (LayerNorm eps 1e-6), CLIP's ``ln_post`` and ``proj``;
  patch tokens and the global token are L2-normalised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn

from zegclip.models.vit import bilinear_positional, embed_tokens


class PromptedViT(nn.Module):
    """Frozen open_clip ViT plus trainable deep prompts.

    Args:
        visual: open_clip ``VisionTransformer`` (frozen by the caller).
        num_tokens: T prompt tokens per layer.
        dropout: prompt dropout (0.1 officially).
    """

    def __init__(self, visual: VisionTransformer, num_tokens: int, *, dropout: float = 0.1):
        super().__init__()
        if not getattr(visual.transformer, "batch_first", True):
            raise ValueError(
                "PromptedViT needs open_clip's batch-first transformer (open_clip 3.x)"
            )
        self.visual = visual
        for block in visual.transformer.resblocks:
            # Run the blocks sequence-first, as OpenAI CLIP does: on CPU, PyTorch's batch-first
            # attention path is ~25% slower at batch 2 (measured); the numerics are the same.
            block.attn.batch_first = False
        width = visual.conv1.out_channels
        num_layers = len(visual.transformer.resblocks)
        patch = visual.conv1.kernel_size[0]
        self.num_tokens = num_tokens
        self.prompt_embeddings = nn.Parameter(torch.zeros(1, num_tokens, width))
        self.deep_prompt_embeddings = nn.Parameter(torch.zeros(num_layers - 1, num_tokens, width))
        self.prompt_proj = nn.Linear(width, width)
        self.prompt_dropout = nn.Dropout(dropout)
        self.prompt_norm = nn.LayerNorm(width, eps=1e-6)
        self._init_prompts(width, patch)

    def _init_prompts(self, width: int, patch: int) -> None:
        # VPT's xavier-uniform formula over a 3 x patch x patch input: 0.0625 for ViT-B/16.
        bound = math.sqrt(6.0 / float(3 * patch * patch + width))
        nn.init.uniform_(self.prompt_embeddings, -bound, bound)
        nn.init.uniform_(self.deep_prompt_embeddings, -bound, bound)
        nn.init.kaiming_normal_(self.prompt_proj.weight, a=0, mode="fan_out")
        nn.init.zeros_(self.prompt_proj.bias)

    @property
    def output_dim(self) -> int:
        """D of the projected tokens (512 for ViT-B/16)."""
        return self.visual.proj.shape[1]

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Official token embedding (class embedding counted twice, bilinear positional resize).

        Args:
            images: (B, 3, H, W) normalised images, H and W multiples of the patch size.

        Returns:
            tokens (B, 1 + h*w, W) after ``ln_pre`` and the patch grid (h, w).
        """
        return embed_tokens(self.visual, images, bilinear_positional, class_twice=True)

    def _prompts(self, params: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
        return self.prompt_dropout(self.prompt_proj(params.to(dtype))).expand(batch, -1, -1)

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Run the prompted ViT.

        Returns:
            final tokens (B, 1 + T + h*w, W) after ``prompt_norm``, and the grid (h, w).
        """
        x, grid = self.embed_tokens(images)
        batch, t = x.shape[0], self.num_tokens
        x = x.transpose(0, 1)  # (L, B, W): the blocks run sequence-first
        for i, block in enumerate(self.visual.transformer.resblocks):
            params = self.prompt_embeddings[0] if i == 0 else self.deep_prompt_embeddings[i - 1]
            prompts = self._prompts(params, batch, x.dtype).transpose(0, 1)  # (T, B, W)
            rest = x[1:] if i == 0 else x[1 + t :]
            x = block(torch.cat([x[:1], prompts, rest], dim=0))
        return self.prompt_norm(x.transpose(0, 1)), grid

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image to normalised global and dense embeddings.

        Args:
            images: (B, 3, H, W) float, ImageNet-normalised.

        Returns:
            global_emb (B, D) and patch_emb (B, D, h, w), both L2-normalised over D.
        """
        x, (h, w) = self.forward_tokens(images)
        x = self.visual.ln_post(x) @ self.visual.proj  # (B, L, D)
        global_emb = F.normalize(x[:, 0], dim=-1)
        patches = x[:, -h * w :].transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return global_emb, F.normalize(patches, dim=1)
