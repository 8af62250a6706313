"""PAMR as it was before issue 23 (one pad per dilation, in-place ``addcmul_`` into zeros,
float32 only): the oracle the faster :class:`zegclip.models.trainfree.pamr.PAMR` must equal.

Kept only in tests; copied from ``zegclip/models/trainfree/pamr.py`` at bea50d9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def shifted_neighbours(x: torch.Tensor, dilations: tuple[int, ...]) -> list[torch.Tensor]:
    """(B, C, H, W) -> 8 * len(dilations) views, entry [.., y, x] = x at (y + dy*d, x + dx*d)."""
    h, w = x.shape[-2:]
    out = []
    for d in dilations:
        padded = F.pad(x, (d, d, d, d), mode="replicate")
        for dy, dx in NEIGHBOURS:
            out.append(padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w])
    return out


class LegacyPAMR(nn.Module):
    """The pre-issue-23 PAMR: (B, C, H, W) image, (B, K, H, W) masks, float32."""

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
        sigma = torch.stack(centre_and_neighbours, dim=2).std(dim=2)
        diffs = torch.stack([(image - n).abs() for n in neighbours], dim=2)
        kappa = -(diffs / (1e-8 + 0.1 * sigma.unsqueeze(2))).mean(dim=1)
        return kappa.softmax(dim=1)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image, (B, K, h, w) masks -> (B, K, H, W) refined, masks' dtype."""
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
