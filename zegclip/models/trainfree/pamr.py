"""Pixel-adaptive mask refinement (PAMR; Araslanov & Roth, CVPR 2020, "Single-Stage Semantic
Segmentation from Image Labels", Sec. 3.3), as SCLIP (optional) and NACLIP (default) apply it.

For every pixel i and each neighbour j among the 8 neighbours at every dilation d, the image
affinity is ``kappa(i, j) = -mean_c |I_c(i) - I_c(j)| / (0.1 * sigma_c(i))`` with ``sigma_c(i)``
the local standard deviation of channel c over the pixel and its neighbours; ``alpha(i, .)`` is its
softmax over neighbours. The masks are then averaged ``num_iter`` times:
``m(i) <- sum_j alpha(i, j) m(j)``. Borders repeat the edge pixel. Because the affinity divides
each channel by its own local deviation, it does not change under per-channel affine
normalisation: PAMR on a CLIP-normalised image equals PAMR on the raw image.

Cost (issue 23): one replicate pad per step (at the largest dilation, which also gives every
smaller dilation's clamped neighbours) and one multiply-add per neighbour, in place, so an eager
step is 1 + 16 kernels and a compiled step is one fused kernel (the pad is an index clamp there).
The propagation may store the masks in a lower ``dtype`` (bf16/fp16) between steps, with
float32 weights and float32 sums within each step; the affinity always runs in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def neighbour_offsets(dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    """(dy, dx) pixel offsets of the 8 neighbours at each dilation, dilation-major."""
    return [(dy * d, dx * d) for d in dilations for dy, dx in NEIGHBOURS]


def shifted_neighbours(x: torch.Tensor, dilations: tuple[int, ...]) -> list[torch.Tensor]:
    """Each pixel's neighbours, one view per (dilation, offset), edge pixels repeated.

    One replicate pad by the largest dilation serves every offset: a padded index within that
    margin is the clamped index, as a pad by the offset's own dilation would give.

    Args:
        x: (B, C, H, W).

    Returns:
        8 * len(dilations) views (B, C, H, W); entry [.., y, x] holds x at (y + dy*d, x + dx*d).
    """
    h, w = x.shape[-2:]
    m = max(dilations)
    padded = F.pad(x, (m, m, m, m), mode="replicate")
    return [
        padded[..., m + oy : m + oy + h, m + ox : m + ox + w]
        for oy, ox in neighbour_offsets(dilations)
    ]


def propagate(
    masks: torch.Tensor, alpha: list[torch.Tensor], dilations: tuple[int, ...]
) -> torch.Tensor:
    """One PAMR step ``m(i) <- sum_j alpha(i, j) m(j)``.

    Args:
        masks: (B, K, H, W) in the propagation dtype.
        alpha: P = 8 * len(dilations) weights (B, 1, H, W) float32.
        dilations: neighbourhood dilations.

    Returns:
        (B, K, H, W) float32 (products and sums in float32 whatever the inputs' dtype).
    """
    shifted = shifted_neighbours(masks, dilations)
    out = alpha[0] * shifted[0]
    for a, neighbour in zip(alpha[1:], shifted[1:]):
        out.addcmul_(a, neighbour)
    return out


class PAMR(nn.Module):
    """Refine (B, K, H, W) masks with the affinities of a (B, C, H, W) image.

    Args:
        num_iter: propagation steps (NACLIP: 10).
        dilations: neighbourhood dilations in pixels (NACLIP: (8, 16)).
    """

    def __init__(self, num_iter: int = 10, dilations: tuple[int, ...] = (8, 16)):
        super().__init__()
        self.num_iter = num_iter
        self.dilations = tuple(dilations)

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, P, H, W) neighbour weights summing to 1 over P."""
        neighbours = shifted_neighbours(image, self.dilations)
        centre_and_neighbours = []
        for start in range(0, len(neighbours), len(NEIGHBOURS)):
            centre_and_neighbours += [image, *neighbours[start : start + len(NEIGHBOURS)]]
        sigma = torch.stack(centre_and_neighbours, dim=2).std(dim=2)  # (B, C, H, W)
        diffs = torch.stack([(image - n).abs() for n in neighbours], dim=2)  # (B, C, P, H, W)
        kappa = -(diffs / (1e-8 + 0.1 * sigma.unsqueeze(2))).mean(dim=1)  # (B, P, H, W)
        return kappa.softmax(dim=1)

    def forward(
        self, image: torch.Tensor, masks: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Args: image (B, C, H, W); masks (B, K, h, w), resized to (H, W) first (bilinear);
        dtype: the masks' storage dtype between steps (None: float32, the papers'; bf16 or fp16
        round the masks, the weights stay float32, products are summed in float32). In a lower
        dtype each image's class maps are propagated minus their mean, added back after in
        float32: exact in real arithmetic (weights sum to 1), it rounds values near 0 instead of
        NACLIP's ~0.2 cosines (bf16 label changes ~0.4 % -> ~0.05 %; docs/gpu.md).

        Returns:
            (B, K, H, W) refined masks, same dtype as ``masks``.
        """
        dtype = dtype or torch.float32
        image = image.float()
        if masks.shape[-2:] != image.shape[-2:]:
            masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
        alpha = self.affinity(image)
        weights = [alpha[:, p : p + 1] for p in range(alpha.shape[1])]
        if dtype == torch.float32:
            refined = masks.float()
            for _ in range(self.num_iter):
                refined = propagate(refined, weights, self.dilations)
            return refined.to(masks.dtype)
        offset = masks.float().mean(dim=(-2, -1), keepdim=True)  # (B, K, 1, 1)
        refined = (masks - offset).to(dtype)
        for _ in range(self.num_iter):
            refined = propagate(refined, weights, self.dilations).to(dtype)
        return (refined + offset).to(masks.dtype)
