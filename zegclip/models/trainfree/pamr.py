"""Pixel-adaptive mask refinement (PAMR; Araslanov & Roth, CVPR 2020, "Single-Stage Semantic
Segmentation from Image Labels", Sec. 3.3), as SCLIP (optional) and NACLIP (default) apply it.

For every pixel i and each neighbour j among the 8 neighbours at every dilation d, the image
affinity is ``kappa(i, j) = -mean_c |I_c(i) - I_c(j)| / (0.1 * sigma_c(i))`` with ``sigma_c(i)``
the local standard deviation of channel c over the pixel and its neighbours; ``alpha(i, .)`` is its
softmax over neighbours. The masks are then averaged ``num_iter`` times:
``m(i) <- sum_j alpha(i, j) m(j)``. Borders repeat the edge pixel. Because the affinity divides
each channel by its own local deviation, it does not change under per-channel affine
normalisation: PAMR on a CLIP-normalised image equals PAMR on the raw image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def shifted_neighbours(x: torch.Tensor, dilations: tuple[int, ...]) -> list[torch.Tensor]:
    """Each pixel's neighbours, one tensor per (dilation, offset), edge pixels repeated.

    Args:
        x: (B, C, H, W).

    Returns:
        8 * len(dilations) tensors (B, C, H, W); entry [.., y, x] holds x at (y + dy*d, x + dx*d).
    """
    h, w = x.shape[-2:]
    out = []
    for d in dilations:
        padded = F.pad(x, (d, d, d, d), mode="replicate")
        for dy, dx in NEIGHBOURS:
            out.append(padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w])
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

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Args: image (B, C, H, W); masks (B, K, h, w), resized to (H, W) first (bilinear).

        Returns:
            (B, K, H, W) refined masks, same dtype as ``masks``.
        """
        image = image.float()
        if masks.shape[-2:] != image.shape[-2:]:
            masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
        alpha = self.affinity(image)
        refined = masks.float()
        for _ in range(self.num_iter):
            shifted = shifted_neighbours(refined, self.dilations)
            refined = torch.zeros_like(refined)
            for p, neighbour in enumerate(shifted):
                refined.addcmul_(alpha[:, p : p + 1], neighbour)
        return refined.to(masks.dtype)
