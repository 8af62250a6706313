"""Training augmentation of the official ZegCLIP configs, re-implemented after mmseg 0.x.

Order (the official configs' ``train_pipeline``, ``configs/_base_/datasets/*.py``): random
rescale (ratio 0.5-2.0 of ``scale`` = (2048, 512), keep ratio), random crop with the
``cat_max_ratio`` rule, horizontal flip (p = 0.5), photometric distortion, ImageNet
normalisation, pad to the crop size (image 0, label 255). Images are RGB uint8; every random
draw comes from the ``numpy.random.Generator`` passed in, so a sample is a pure function
of (image, label, generator seed), which is what makes resumed runs exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from zegclip.preprocess import normalize
from zegclip.train.data import MACHINE
from zegclip.vocab import IGNORE_INDEX


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (defaults: the official 512 x 512 configs).

    Attributes:
        crop_size: square crop side.
        scale: (long, short) of the keep-ratio rescale before the ratio is applied.
        ratio_range: rescale ratio range.
        cat_max_ratio: a crop is re-drawn (up to 10 times) while one class covers more than this.
        flip_prob: horizontal flip probability.
        use_photometric: apply mmseg's PhotoMetricDistortion.
    """

    crop_size: int = 512
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    use_photometric: bool = True


def random_rescale(
    image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg ``Resize(img_scale, ratio_range, keep_ratio=True)``: bilinear image, nearest label."""
    ratio = rng.uniform(*cfg.ratio_range)
    long_side, short_side = cfg.scale[0] * ratio, cfg.scale[1] * ratio
    h, w = label.shape
    factor = min(long_side / max(h, w), short_side / min(h, w))
    new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return image, label


def _crop_box(shape: tuple[int, int], crop: int, rng: np.random.Generator) -> tuple[int, int]:
    y0 = int(rng.integers(0, max(shape[0] - crop, 0) + 1))
    x0 = int(rng.integers(0, max(shape[1] - crop, 0) + 1))
    return y0, x0


def random_crop(
    image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg ``RandomCrop`` with ``cat_max_ratio``: up to 10 draws while one class dominates.

    A draw is accepted when the crop holds more than one non-ignore class and the largest covers
    less than ``cat_max_ratio`` of the non-ignore pixels; after 10 rejections the last draw is used.
    """
    c = cfg.crop_size
    y0, x0 = _crop_box(label.shape, c, rng)
    if cfg.cat_max_ratio < 1.0:
        for _ in range(10):
            window = label[y0 : y0 + c, x0 : x0 + c]
            if window.dtype != np.uint8:  # MACHINE-marked ids: a class, whoever labelled it
                window = window % MACHINE
            values, counts = np.unique(window, return_counts=True)
            counts = counts[values != IGNORE_INDEX]
            if len(counts) > 1 and counts.max() / counts.sum() < cfg.cat_max_ratio:
                break
            y0, x0 = _crop_box(label.shape, c, rng)
    return image[y0 : y0 + c, x0 : x0 + c], label[y0 : y0 + c, x0 : x0 + c]


def _scale_shift(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion`` defaults, each step with probability 0.5.

    Brightness delta in [-32, 32]; contrast x[0.5, 1.5] before or after (random mode) the HSV
    steps; saturation x[0.5, 1.5]; hue shift in [-18, 18] (OpenCV's 0-179 hue scale).
    """
    if rng.integers(2):
        image = _scale_shift(image, beta=rng.uniform(-32, 32))
    contrast_first = bool(rng.integers(2))
    if contrast_first and rng.integers(2):
        image = _scale_shift(image, alpha=rng.uniform(0.5, 1.5))
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = _scale_shift(hsv[..., 1], alpha=rng.uniform(0.5, 1.5))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(rng.integers(-18, 18))) % 180
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and rng.integers(2):
        image = _scale_shift(image, alpha=rng.uniform(0.5, 1.5))
    return image


def normalize_and_pad(
    image: np.ndarray, label: np.ndarray, crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """ImageNet-normalise to CHW float32, then pad bottom/right to ``crop`` (0 / 255)."""
    chw = normalize(image)[0].numpy()  # (3, h, w) float32
    h, w = label.shape
    out_img = np.zeros((3, max(h, crop), max(w, crop)), dtype=np.float32)
    out_lab = np.full((max(h, crop), max(w, crop)), IGNORE_INDEX, dtype=np.int64)
    out_img[:, :h, :w] = chw
    out_lab[:h, :w] = label
    return out_img, out_lab


def augment(
    image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The full training transform.

    Args:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) uint8 class ids, 255 = ignore (or uint16 with ``MACHINE`` marks, kept).
        cfg: settings.
        rng: source of every random draw.

    Returns:
        image (3, crop, crop) float32 normalised and label (crop, crop) int64.
    """
    image, label = random_rescale(image, label, cfg, rng)
    image, label = random_crop(image, label, cfg, rng)
    if rng.random() < cfg.flip_prob:
        image, label = image[:, ::-1], label[:, ::-1]
    if cfg.use_photometric:
        image = photometric_distortion(np.ascontiguousarray(image), rng)
    return normalize_and_pad(image, np.ascontiguousarray(label), cfg.crop_size)
