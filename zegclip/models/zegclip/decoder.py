"""ZegCLIP's head: the relationship descriptor and the 3-layer TPN decoder.

Official behaviour (``ATMSingleHeadSeg`` in the official ``decode_seg.py``): class queries are
``q_proj(cat([g * t, t]))`` (element-wise product of the image's global embedding and each class
text embedding); each decoder layer is post-norm cross-attention from queries to patch tokens plus
an FFN, with no self-attention among queries. A layer's mask is its pre-softmax attention logits
``q k^T / sqrt(d_head)`` averaged over heads; only the last layer's mask is used.
"""

from __future__ import annotations

import torch
from torch import nn


class RelationshipDescriptor(nn.Module):
    """Image-conditioned class queries.

    Args:
        dim: D, the CLIP embedding size (512 for ViT-B/16).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.q_proj = nn.Linear(2 * dim, dim)

    def forward(self, global_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Args: global_emb (B, D); text_emb (N, D). Returns queries (B, N, D)."""
        text = text_emb.to(global_emb.dtype).unsqueeze(0).expand(global_emb.shape[0], -1, -1)
        return self.q_proj(torch.cat([global_emb.unsqueeze(1) * text, text], dim=-1))


class CrossAttention(nn.Module):
    """Multi-head cross-attention that also returns head-averaged pre-softmax logits."""

    def __init__(self, dim: int, num_heads: int, *, attn_drop: float = 0.1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, h, n, dh)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: queries (B, N, D); memory (B, L, D).

        Returns:
            attended (B, N, D) and mask logits (B, N, L) averaged over heads, before softmax.
        """
        q, k, v = (
            self._heads(self.q(queries)),
            self._heads(self.k(memory)),
            self._heads(self.v(memory)),
        )
        logits = (q @ k.transpose(-2, -1)) * self.scale  # (B, h, N, L)
        attn = self.attn_drop(logits.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(queries.shape)
        return self.proj(out), logits.mean(dim=1)


class DecoderLayer(nn.Module):
    """Post-norm cross-attention + ReLU FFN (TPN_DecoderLayer without its unused self-attention)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, *, dropout: float = 0.1):
        super().__init__()
        self.multihead_attn = CrossAttention(dim, num_heads, attn_drop=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: queries (B, N, D); memory (B, L, D).

        Returns:
            queries (B, N, D) and mask logits (B, N, L).
        """
        attended, logits = self.multihead_attn(queries, memory)
        x = self.norm2(queries + self.dropout2(attended))
        x = self.norm3(x + self.dropout3(self.linear2(self.dropout(self.linear1(x).relu()))))
        return x, logits


class SegHead(nn.Module):
    """Relationship descriptor + decoder; returns the last layer's mask logits.

    Args:
        dim: D.
        num_layers / num_heads / ffn_dim: decoder shape (3 / 8 / 2048 officially).
        dropout: decoder dropout.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_layers: int = 3,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.relation = RelationshipDescriptor(dim)
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, ffn_dim, dropout=dropout) for _ in range(num_layers)
        )

    def forward(
        self, global_emb: torch.Tensor, patch_emb: torch.Tensor, text_emb: torch.Tensor
    ) -> torch.Tensor:
        """Args: global_emb (B, D); patch_emb (B, D, h, w); text_emb (N, D).

        Returns:
            mask logits (B, N, h, w) of the last decoder layer.
        """
        b, _, h, w = patch_emb.shape
        memory = patch_emb.flatten(2).transpose(1, 2)  # (B, h*w, D)
        queries = self.relation(global_emb, text_emb)
        for layer in self.layers:
            queries, logits = layer(queries, memory)
        return logits.reshape(b, -1, h, w)
