"""Last-ViT-block variants of the training-free frozen-CLIP segmenters.

Each method runs CLIP blocks 0..L-2 unchanged and replaces block L-1 (read from each method's
released code: the MaskCLIP, SCLIP, ClearCLIP and NACLIP repositories). With ``y = ln_1(x)`` and
per-head ``q, k, v`` from the block's
``in_proj`` (``s = head_dim ** -0.5``):

* ``maskclip`` (Zhou et al., ECCV 2022): ``a = out_proj(v)`` (every token attends only to itself);
  the official code keeps the residual and the FFN: ``x' = x + a; x' = x' + mlp(ln_2(x'))``.
* ``sclip`` (Wang et al., 2023): ``A = softmax(q q^T s) + softmax(k k^T s)``,
  ``a = out_proj(A v)``; residual and FFN kept as in the SCLIP code.
* ``clearclip`` (Lan et al., ECCV 2024): ``A = softmax(q q^T s)``, ``x' = out_proj(A v)``;
  no residual, no FFN.
* ``naclip`` (Hajimiri et al., 2024, ``arch='reduced'``): ``A = softmax(k k^T s + G)``,
  ``x' = out_proj(A v)``; no residual, no FFN. ``G[i, j] = exp(-|p_i - p_j|^2 / (2 std^2))`` over
  patch-grid positions (std 5), zero on the CLS row and column.

Pinned to open_clip 3.3's ``ResidualAttentionBlock`` (batch-first ``nn.MultiheadAttention`` with
``in_proj_weight``/``in_proj_bias``/``out_proj``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

NACLIP_GAUSSIAN_STD = 5.0  # NACLIP's gaussian_std default, in patches

# method -> (attention kind, keeps residual + FFN)
LAST_BLOCKS: dict[str, tuple[str, bool]] = {
    "maskclip": ("self", True),
    "sclip": ("csa", True),
    "clearclip": ("qq", False),
    "naclip": ("kk_neighbour", False),
}


def split_qkv(block: ResidualAttentionBlock, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-head query, key and value of ``y`` with the block's own projection.

    Args:
        block: an open_clip ``ResidualAttentionBlock``.
        y: (B, L, W) tokens, already ``ln_1``-normalised.

    Returns:
        q, k, v, each (B, H, L, W / H).
    """
    attn = block.attn
    b, length, width = y.shape
    qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)  # (B, L, 3W)
    qkv = qkv.view(b, length, 3, attn.num_heads, width // attn.num_heads)
    return tuple(qkv.permute(2, 0, 3, 1, 4).unbind(0))  # 3 x (B, H, L, hd)


def neighbourhood_bias(grid: tuple[int, int], std: float = NACLIP_GAUSSIAN_STD) -> torch.Tensor:
    """NACLIP's Gaussian neighbourhood term added to the attention logits.

    Args:
        grid: patch grid (h, w); tokens are CLS then patches in row-major order.
        std: Gaussian standard deviation in patches.

    Returns:
        (1 + h*w, 1 + h*w) float32; entry (i, j) = exp(-squared grid distance / (2 std^2)) for
        patches, 0 wherever the CLS token is involved.
    """
    ys, xs = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()  # (h*w, 2)
    gauss = torch.exp(-torch.cdist(pos, pos).square() / (2.0 * std**2))
    return F.pad(gauss, (1, 0, 1, 0))  # zero CLS row and column


def attention_weights(
    kind: str, q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, H, L, L) attention of a modified last block (``self`` is handled by the caller).

    Args:
        kind: ``csa``, ``qq`` or ``kk_neighbour``.
        q, k: (B, H, L, hd).
        bias: (L, L) additive logits for ``kk_neighbour``.
    """
    scale = q.shape[-1] ** -0.5
    if kind == "csa":
        qq = (q @ q.transpose(-2, -1)) * scale
        kk = (k @ k.transpose(-2, -1)) * scale
        return qq.softmax(dim=-1) + kk.softmax(dim=-1)
    if kind == "qq":
        return ((q @ q.transpose(-2, -1)) * scale).softmax(dim=-1)
    if kind == "kk_neighbour":
        assert bias is not None
        logits = (k @ k.transpose(-2, -1)) * scale + bias.to(k.dtype)
        return logits.softmax(dim=-1)
    raise ValueError(f"unknown attention kind {kind!r}")


def attend(
    kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``attention_weights(kind, q, k, bias) @ v`` with PyTorch's fused attention kernels.

    ``qq`` is ``sdpa(q, q, v)``, ``kk_neighbour`` is ``sdpa(k, k, v, bias)`` and ``csa``, a sum
    of two softmaxes, is ``sdpa(q, q, v) + sdpa(k, k, v)``; ``self`` returns ``v``. The
    (B, H, L, L) weights are never materialised (CUDA flash / memory-efficient kernels). On
    other devices the explicit form runs: PyTorch's CPU fallback for a float mask is the math
    kernel, measured ~15 % slower per NACLIP image here.

    Args:
        q, k, v: (B, H, L, hd). bias: (L, L) additive logits for ``kk_neighbour``.

    Returns:
        (B, H, L, hd).
    """
    if kind == "self":
        return v
    if q.device.type != "cuda":
        return attention_weights(kind, q, k, bias) @ v
    return fused_attend(kind, q, k, v, bias)


def fused_attend(
    kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`attend` through ``scaled_dot_product_attention`` on any device (tested on CPU)."""
    sdpa = F.scaled_dot_product_attention
    if kind == "qq":
        return sdpa(q, q, v)
    if kind == "csa":
        return sdpa(q, q, v) + sdpa(k, k, v)
    if kind == "kk_neighbour":
        assert bias is not None
        return sdpa(k, k, v, attn_mask=bias.to(k.dtype))
    raise ValueError(f"unknown attention kind {kind!r}")


def forward_last_block(
    block: ResidualAttentionBlock, x: torch.Tensor, method: str, *, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Run a modified last block.

    Args:
        block: the ViT's last open_clip ``ResidualAttentionBlock``.
        x: (B, L, W) tokens entering it.
        method: a key of :data:`LAST_BLOCKS`.
        bias: (L, L) neighbourhood bias (``naclip`` only; see :func:`neighbourhood_bias`).

    Returns:
        (B, L, W) tokens, before ``ln_post``.
    """
    kind, keep_residual = LAST_BLOCKS[method]
    q, k, v = split_qkv(block, block.ln_1(x))
    mixed = attend(kind, q, k, v, bias)  # (B, H, L, hd)
    out = block.attn.out_proj(mixed.transpose(1, 2).flatten(2))  # (B, L, W)
    if not keep_residual:
        return out
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))
