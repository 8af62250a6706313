"""Official ZegCLIP test-time preprocessing and sliding-window geometry.

Matches mmseg 0.24 / mmcv 1.4.4 as the official repository's test configs set it up
(``configs/_base_/datasets/*.py``):
``Resize(img_scale=(2048, 512), keep_ratio=True, min_size=512)`` then ImageNet-statistics
``Normalize``. Resizing uses OpenCV's fixed-point ``INTER_LINEAR`` because torch's bilinear
differs by one grey level on about a third of pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from zegclip.devices import cached_on_device

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 scale (ZegCLIP configs, not CLIP's stats)
IMAGENET_STD = (58.395, 57.12, 57.375)
SHORT_SIDE = 512
CROP_SIZE = 512
STRIDE = 426


def official_resize_shape(height: int, width: int, short_side: int = SHORT_SIDE) -> tuple[int, int]:
    """Output (height, width) of mmcv ``imrescale`` as ZegCLIP's test pipeline calls it.

    The short side becomes ``short_side``; the 2048 long-side cap never applies because of
    ``min_size``. Rounding is mmcv's ``int(x * scale + 0.5)``.
    """
    if height > width:
        scale = (short_side * height / width, short_side)
    else:
        scale = (short_side, short_side * width / height)
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_short_side(image: np.ndarray, short_side: int = SHORT_SIDE) -> np.ndarray:
    """Resize an HWC uint8 image so its short side is ``short_side`` (cv2 bilinear)."""
    new_h, new_w = official_resize_shape(image.shape[0], image.shape[1], short_side)
    if (new_h, new_w) == image.shape[:2]:
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def normalize(
    image: np.ndarray,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    *,
    max_value: float = 1.0,
) -> torch.Tensor:
    """HWC uint8 RGB -> (1, 3, H, W) float32 ``(image / max_value - mean) / std``.

    Args:
        image: (H, W, 3) uint8 RGB.
        mean / std: per-channel RGB statistics on the ``[0, 255 / max_value]`` scale: ImageNet's
            0-255 ones by default (ZegCLIP); CLIP's 0-1 ones with ``max_value=255``.
        max_value: divisor applied to the pixel values first (1 = none).
    """
    x = image.astype(np.float32)
    if max_value != 1.0:
        x = x / np.float32(max_value)
    chw = ((x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)).transpose(
        2, 0, 1
    )
    return torch.from_numpy(np.ascontiguousarray(chw))[None]


def normalize_tensor(
    image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], max_value: float = 1.0
) -> torch.Tensor:
    """(H, W, 3) or (N, H, W, 3) uint8 tensor on any device -> (1 or N, 3, H, W)
    ``(x / max_value - mean) / std``.

    Elementwise float32 operations in the same order as the numpy path (:func:`normalize`, the
    training-free preprocessing), so the values are bit-identical. The statistics are put on the
    device once per (statistics, device) and reused.
    """
    x = image.float()
    if max_value != 1.0:
        x = x / max_value
    mean_t, std_t = _statistics(tuple(mean), tuple(std), x.device)
    out = (x - mean_t) / std_t
    return (out[None] if out.ndim == 3 else out).permute(0, 3, 1, 2).contiguous()


_STATISTICS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _statistics(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(3,) float32 mean and std on ``device`` (cached: no host-to-device copy per batch;
    built once, visible to every thread's stream: ``devices.cached_on_device``)."""
    return cached_on_device(_STATISTICS, (mean, std, device), lambda: _pair(mean, std, device))


def _pair(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(3,) float32 mean and std on ``device``, plain tensors (usable outside inference mode)."""
    with torch.inference_mode(False):
        stats = torch.tensor([mean, std], dtype=torch.float32)
        return stats[0].to(device), stats[1].to(device)


def check_rgb(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is (H, W, 3) uint8."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HWC uint8 RGB image, got {image.dtype} {image.shape}")


def prepare_image(image: np.ndarray, short_side: int = SHORT_SIDE) -> np.ndarray:
    """Checked :func:`resize_short_side`: the CPU half of :func:`preprocess` (HWC uint8 out).

    Raises:
        ValueError: not an HWC uint8 RGB array.
    """
    check_rgb(image)
    return resize_short_side(image, short_side)


def preprocess(
    image: np.ndarray,
    short_side: int = SHORT_SIDE,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    *,
    max_value: float = 1.0,
) -> torch.Tensor:
    """Test-time preprocessing of one image: short-side resize, then :func:`normalize`.

    Args:
        image: (H, W, 3) uint8 RGB, values in [0, 255].
        short_side: target short side; 512 for the official checkpoints.
        mean / std / max_value: normalisation (default: the official ZegCLIP ImageNet one).

    Returns:
        (1, 3, H', W') float32 with min(H', W') == short_side.

    Raises:
        ValueError: not an HWC uint8 RGB array.
    """
    return normalize(prepare_image(image, short_side), mean, std, max_value=max_value)


def slide_windows(
    height: int, width: int, crop: int = CROP_SIZE, stride: int = STRIDE
) -> list[tuple[int, int, int, int]]:
    """mmseg ``slide_inference`` windows as (y1, y2, x1, x2), covering the whole image.

    Windows never extend past the image: the last row/column is shifted back to end at the
    border, and images smaller than ``crop`` get one window of their own size.
    """
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    windows = []
    for i in range(rows):
        for j in range(cols):
            y2 = min(i * stride + crop, height)
            x2 = min(j * stride + crop, width)
            windows.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return windows
