"""ZegCLIP's "non-mutually exclusive" loss: sigmoid focal + dice per class channel.

As the official ``models/losses/atm_loss.py`` and ``criterion.py`` compute it.

Every class channel is an independent sigmoid classifier against a one-hot target built at the
label resolution (logits are upsampled bilinearly to it first).

* Focal (alpha 0.25, gamma 2, weight 100): averaged over pixels per (image, class), summed over
  all images and classes, divided by ``num_masks`` = the number of (image, class) pairs present in
  the ground truth (averaged across DDP ranks, at least 1).
* **Official quirk, kept on purpose:** ignore pixels (255) are NOT excluded from the focal term.
  They get an all-zero target, i.e. they are negatives for every class, and they count in the
  per-channel pixel mean. (In inductive training that includes unseen-class pixels.)
* Dice (weight 1, +1 smoothing): only (image, class) pairs present in the ground truth; ignore
  pixels are zeros of the target but the prediction's mass on them still counts in the
  denominator (as in the official code). Also summed and divided by ``num_masks``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as torchvision_focal

from zegclip.vocab import IGNORE_INDEX

FOCAL_WEIGHT = 100.0  # the authors use 100 (issue #7), not the 20 of the first released configs
DICE_WEIGHT = 1.0


def one_hot_targets(
    labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Per-class binary targets; ignore pixels are all-zero.

    Args:
        labels: (B, H, W) int64 in [0, num_classes) or ``ignore_index``.
        num_classes: C.

    Returns:
        (B, C, H, W) float32.
    """
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return onehot * valid.unsqueeze(1)


def count_masks(targets: torch.Tensor) -> torch.Tensor:
    """Number of (image, class) pairs present, averaged over DDP ranks, at least 1.

    Args:
        targets: (B, C, H, W) one-hot targets.

    Returns:
        0-dim float32 tensor.
    """
    num = (targets.flatten(2).sum(-1) > 0).sum().float()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        num = num / dist.get_world_size()
    return num.clamp(min=1.0)


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_masks: torch.Tensor | float,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    pixel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """RetinaNet focal loss, mean over pixels, sum over (image, class), divided by ``num_masks``.

    Args:
        logits: (B, C, H, W) pre-sigmoid.
        targets: (B, C, H, W) in {0, 1}.
        pixel_weight: optional (B, H, W) float multiplier of each pixel's term (None = 1).
    """
    # torchvision's op is the official criterion's formula, term for term (same float order).
    loss = torchvision_focal(logits.float().flatten(2), targets.flatten(2), alpha, gamma)
    if pixel_weight is not None:
        loss = loss * pixel_weight.flatten(1).unsqueeze(1)
    return loss.mean(-1).sum() / num_masks


def dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_masks: torch.Tensor | float,
    *,
    pixel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``1 - (2 p.t + 1) / (sum p + sum t + 1)`` over (image, class) pairs present in ``targets``.

    Args:
        logits: (B, C, H, W) pre-sigmoid.
        targets: (B, C, H, W) in {0, 1}.
        pixel_weight: optional (B, H, W) float; each pixel's ``p`` and ``t`` are scaled by it.
    """
    prob = logits.float().flatten(2).sigmoid()
    targets = targets.flatten(2)
    if pixel_weight is not None:
        weight = pixel_weight.flatten(1).unsqueeze(1)
        prob, targets = prob * weight, targets * weight
    present = targets.sum(-1) > 0  # (B, C)
    prob, targets = prob[present], targets[present]  # (K, H*W)
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def seg_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    focal_weight: float = FOCAL_WEIGHT,
    dice_weight: float = DICE_WEIGHT,
    ignore_index: int = IGNORE_INDEX,
    pixel_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """ZegCLIP's weighted focal + dice loss.

    Args:
        logits: (B, C, h, w) pre-sigmoid mask logits at any resolution; upsampled bilinearly
            (align_corners=False) to the label size.
        labels: (B, H, W) int64 in [0, C) or ``ignore_index``.
        pixel_weight: optional (B, H, W) float per-pixel weight (``--pseudo-weight`` on
            machine-labelled pixels); None is the official loss exactly.

    Returns:
        the scalar loss (float32) and its parts as floats (``focal``, ``dice``, ``num_masks``).
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(
            logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
        )
    targets = one_hot_targets(labels, logits.shape[1], ignore_index)
    num_masks = count_masks(targets)
    focal = sigmoid_focal_loss(logits, targets, num_masks, pixel_weight=pixel_weight)
    dice = dice_loss(logits, targets, num_masks, pixel_weight=pixel_weight)
    total = focal_weight * focal + dice_weight * dice
    parts = {
        "focal": float(focal.detach()),
        "dice": float(dice.detach()),
        "num_masks": float(num_masks),
    }
    return total, parts
