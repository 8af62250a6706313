"""CLIP ViT token embedding, shared by every family, and the positional-table resize rules.

Each family embeds tokens the same way (``conv1`` patches, class token, positional table,
``ln_pre``) and differs only in how the positional table meets a patch grid other than the one
it was trained for:

* :func:`bilinear_positional` (ZegCLIP and ZegOT): the spatial table, cast to the activations'
  dtype, resized bilinearly with ``size=grid``, as ZegCLIP's ``VPTCLIPVisionTransformer`` does
  (the table itself was resized once at load time, see :func:`zegclip.clip.build_clip`);
* :func:`reference_positional` (training-free MaskCLIP / SCLIP / ClearCLIP / NACLIP): the
  *original* CLIP table resized bicubically with ``scale_factor=((gh + 0.1) / side, (gw + 0.1) /
  side)``, in float32, then cast, as ``VisionTransformer.interpolate_pos_encoding`` in the
  methods' released code (SCLIP's ``clip/model.py``, which NACLIP and ClearCLIP reuse) does.

In both the class-token entry is kept as is and a grid equal to the table's own is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

PositionalRule = Callable[[torch.Tensor, tuple[int, int], torch.dtype], torch.Tensor]


def table_side(pos: torch.Tensor) -> int:
    """Side s of the square patch grid of a (1 + s*s, W) positional table."""
    return math.isqrt(pos.shape[0] - 1)


def bilinear_positional(
    pos: torch.Tensor, grid: tuple[int, int], dtype: torch.dtype
) -> torch.Tensor:
    """ZegCLIP's rule: (1 + s*s, W) table -> (1 + h*w, W) in ``dtype``.

    Cast first, then the spatial part resized bilinearly in ``dtype`` (``size=grid``,
    align_corners=False). timm's ``resample_abs_pos_embed`` gives the same in float32 but not in
    bfloat16 (it resizes in float32), so the official call is kept.
    """
    pos = pos.to(dtype)
    side = table_side(pos)
    if grid == (side, side):
        return pos
    table = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, W, s, s)
    table = F.interpolate(table, size=grid, mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], table.flatten(2).transpose(1, 2)[0]])


def reference_positional(
    pos: torch.Tensor, grid: tuple[int, int], dtype: torch.dtype
) -> torch.Tensor:
    """The training-free methods' rule: (1 + s*s, W) table -> (1 + h*w, W) in ``dtype``.

    Bicubic (align_corners=False, no antialias) with the DINO ``+ 0.1`` scale factor, computed in
    float32 from the table as given, then cast to ``dtype``.
    """
    side = table_side(pos)
    if grid == (side, side):
        return pos.to(dtype)
    gh, gw = grid
    table = pos[1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, W, s, s)
    table = F.interpolate(
        table,
        scale_factor=((gh + 0.1) / side, (gw + 0.1) / side),
        mode="bicubic",
        align_corners=False,
    )
    assert table.shape[-2:] == grid, (table.shape, grid)
    spatial = table.flatten(2).transpose(1, 2)[0]  # (h*w, W)
    return torch.cat([pos[:1].float(), spatial]).to(dtype)


def embed_tokens(
    visual: VisionTransformer,
    images: torch.Tensor,
    positional: PositionalRule,
    *,
    class_twice: bool = False,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch embedding, class token, positional table and ``ln_pre`` of an open_clip ViT.

    Args:
        visual: the frozen open_clip ``VisionTransformer``.
        images: (N, 3, H, W) normalised images, H and W multiples of the patch size.
        positional: how the positional table meets the (H/p, W/p) grid.
        class_twice: ZegCLIP's token 0 is ``class + (pos[0] + class)``; others ``class + pos[0]``.

    Returns:
        tokens (N, 1 + h*w, W) in the activations' dtype, and the grid (h, w).
    """
    x = visual.conv1(images)  # (N, W, h, w)
    grid = (x.shape[2], x.shape[3])
    x = x.flatten(2).transpose(1, 2)  # (N, h*w, W)
    pos = positional(visual.positional_embedding, grid, x.dtype)
    cls = visual.class_embedding.to(x.dtype)
    token0 = cls + pos[0] + cls if class_twice else cls + pos[0]
    x = torch.cat([token0.expand(x.shape[0], 1, -1), x + pos[1:]], dim=1)
    return visual.ln_pre(x), grid
