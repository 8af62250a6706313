"""Training-free dense segmentation with a frozen CLIP ViT (no checkpoint, no training).

The last ViT block is modified as in MaskCLIP, SCLIP, ClearCLIP or NACLIP (see
:mod:`zegclip.models.trainfree.attention`); patch tokens go through ``ln_post`` and ``proj`` and are
compared by cosine with the class-name embeddings (80 ImageNet templates averaged). As in the
papers' code, each window's cosine map is resized bilinearly to the window and
:class:`zegclip.predictor.SegPredictor` averages overlapping windows; the stitched logits are
refined with PAMR (:meth:`FrozenClipSegmenter.refine`), resized to the original image, turned
into a softmax over *all* vocabulary rows (synonyms and background words) at the method's logit
scale (:meth:`FrozenClipSegmenter.activate`), max-reduced over synonyms, and pixels whose best
probability is under ``default_min_score`` are left unlabelled.

Default ``naclip``: the best published CLIP-only ViT-B/16 result of the four (NACLIP repository
README, PAMR on: 8-benchmark average 42.5 mIoU; VOC21 64.1, PC60 35.0, COCO-Object 36.2, VOC20
83.0, PC59 38.4, COCO-Stuff 25.7, Cityscapes 38.3, ADE 19.1), against SCLIP 38.2, ClearCLIP 38.1
and MaskCLIP 30.3 as the Trident (ICCV 2025) README tabulates them.

Positional embeddings follow the methods' released code (:func:`zegclip.models.vit.
reference_positional`): the ViT is built at CLIP's native size and the original table is resized
bicubically per window grid.

One deviation from the papers' code: PAMR runs at the preprocessed size rather than the original
image size (bounded memory on large photos; see :meth:`FrozenClipSegmenter.refine`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transformer import VisionTransformer
from torch import nn

from zegclip.clip import ClipSpec, build_towers, native_image_size, tokenizer_for
from zegclip.devices import cached_on_device
from zegclip.models.scorer import DenseScorer
from zegclip.models.trainfree.attention import (
    LAST_BLOCKS,
    NACLIP_GAUSSIAN_STD,
    forward_last_block,
    neighbourhood_bias,
)
from zegclip.models.trainfree.pamr import PAMR
from zegclip.models.vit import embed_tokens, reference_positional
from zegclip.preprocess import normalize_tensor, preprocess, slide_windows
from zegclip.templates import IMAGENET80
from zegclip.text import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """One method's published inference settings (the methods' released configs).

    Attributes:
        logit_scale: softmax temperature applied to cosines.
        min_score: probability under which a pixel is unlabelled; None = no threshold.
        short_side / crop / stride: test resize and sliding window, in pixels.
        use_pamr: PAMR on by default (10 steps, dilations (8, 16)).
    """

    logit_scale: float
    min_score: float | None
    short_side: int
    crop: int
    stride: int
    use_pamr: bool


RECIPES: dict[str, Recipe] = {
    # MaskCLIP has no training-free config of its own: SCLIP's protocol, under which the MaskCLIP
    # baseline numbers were reported; scale 100 is CLIP's own learned logit scale; no threshold.
    "maskclip": Recipe(100.0, None, 336, 224, 112, use_pamr=False),
    # SCLIP default scale 40, prob_thd 0.1 on the with-background sets; PAMR optional (off).
    "sclip": Recipe(40.0, 0.1, 336, 224, 112, use_pamr=False),
    # ClearCLIP: scale 50, 448/448/224; thresholds 0.5/0.15/0.4 per set -> the mildest, 0.15.
    "clearclip": Recipe(50.0, 0.15, 448, 448, 224, use_pamr=False),
    # NACLIP repo defaults: scale 40, prob_thd 0.1 (with-background sets), PAMR on.
    "naclip": Recipe(40.0, 0.1, 336, 224, 112, use_pamr=True),
}


class FrozenClipSegmenter(DenseScorer):
    """Frozen CLIP ViT with a modified last block; a :class:`~zegclip.predictor.DenseScorer`.

    Args:
        visual: open_clip ``VisionTransformer`` built at CLIP's native input size (frozen).
        method: a key of :data:`RECIPES`.
        recipe: its settings.
        pamr: refinement module or None.
        text: open_clip CLIP for its text tower (``visual`` removed), or None in replicas.
        tokenizer: the text tower's tokenizer, or None.
    """

    default_templates = IMAGENET80

    def __init__(
        self,
        visual: VisionTransformer,
        method: str,
        recipe: Recipe,
        *,
        pamr: PAMR | None = None,
        text: nn.Module | None = None,
        tokenizer: Tokenizer | None = None,
    ):
        super().__init__(text=text, tokenizer=tokenizer)
        self.visual = visual
        self.method = method
        self.recipe = recipe
        self.pamr = pamr
        self.default_min_score = recipe.min_score
        self.row_softmax_scale = recipe.logit_scale
        self.short_side = recipe.short_side
        self.patch_size = visual.conv1.kernel_size[0]
        self._bias_cache: dict[tuple, torch.Tensor] = {}

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """HWC uint8 RGB -> (1, 3, H', W') float32: short side resized (cv2 bilinear, mmcv
        rounding) to ``recipe.short_side``, normalised with OpenAI CLIP's mean/std.

        Raises:
            ValueError: not an HWC uint8 RGB array.
        """
        return preprocess(
            image, self.recipe.short_side, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, max_value=255
        )

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 tensor from :meth:`prepare` -> (1, 3, H, W) CLIP-normalised."""
        return normalize_tensor(image, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, max_value=255.0)

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """mmseg-style sliding windows (y1, y2, x1, x2) of ``recipe.crop`` / ``recipe.stride``."""
        return slide_windows(height, width, self.recipe.crop, self.recipe.stride)

    def crop_scores(
        self, crops: torch.Tensor, text_emb: torch.Tensor, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patch-text cosine logits of each crop (averaged over windows by the predictor).

        Args:
            crops: (N, 3, h, w) CLIP-normalised crops.
            text_emb: (S, D) L2-normalised row embeddings.
            seen: ignored (training-free: no seen classes).

        Returns:
            (N, S, h, w) float32 cosines, bilinearly upsampled to the crop.
        """
        return self.cosine_maps(crops, text_emb).float()

    def refine(
        self, scores: torch.Tensor, images: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """PAMR on stitched (N, S, h, w) logits with the whole preprocessed (N, 3, h, w) images,
        batched over images (one image: (S, h, w) with (1, 3, h, w)); ``dtype``: PAMR's
        propagation dtype (None: float32, see :class:`PAMR`).

        The papers run PAMR at the original image size; here it runs at the preprocessed size
        (short side 336/448), which bounds its memory (it grows with S x H x W x 16) on large
        photos.
        """
        if self.pamr is None:
            return scores
        if scores.ndim == 3:
            return self.pamr(images.to(scores.device), scores[None], dtype)[0]
        return self.pamr(images.to(scores.device), scores, dtype)

    def activate(self, scores: torch.Tensor) -> torch.Tensor:
        """(..., S, H, W) logits at the original size -> softmax over rows (dim -3) at the
        method's scale."""
        return (self.recipe.logit_scale * scores).softmax(dim=-3)

    def cosine_maps(self, crops: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) crops -> (N, S, h, w) patch-text cosines, bilinearly upsampled.

        Crops whose sides are not multiples of the patch size are zero-padded (bottom/right) and
        the padding is cut off after upsampling.
        """
        h, w = crops.shape[-2:]
        pad_h, pad_w = -h % self.patch_size, -w % self.patch_size
        x = F.pad(crops, (0, pad_w, 0, pad_h)) if pad_h or pad_w else crops
        feats = self.encode_dense(x)  # (N, D, gh, gw), L2-normalised
        cos = torch.einsum("ndhw,sd->nshw", feats, text_emb.to(feats.dtype))
        cos = F.interpolate(cos, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return cos[..., :h, :w]

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) with H, W multiples of the patch -> (N, D, H/p, W/p) L2-normalised."""
        x, grid = self.embed_tokens(images)
        blocks = self.visual.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x)
        bias = self._neighbourhood_bias(grid, x) if self.method == "naclip" else None
        x = forward_last_block(blocks[-1], x, self.method, bias=bias)
        x = self.visual.ln_post(x[:, 1:]) @ self.visual.proj  # (N, h*w, D)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        return F.normalize(x, dim=1)

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """CLIP's patch/class/positional embedding and ``ln_pre``, the positional table resized
        from the original one as the methods' code does (:func:`reference_positional`).

        Returns:
            tokens (N, 1 + h*w, W) and the grid (h, w).
        """
        return embed_tokens(self.visual, images, reference_positional)

    def _neighbourhood_bias(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """(1 + h*w, 1 + h*w) bias in ``like``'s dtype on its device, built once per key (for
        every thread's stream: ``devices.cached_on_device``)."""

        def build() -> torch.Tensor:
            return neighbourhood_bias(grid, NACLIP_GAUSSIAN_STD).to(like.device, like.dtype)

        return cached_on_device(self._bias_cache, (grid, like.device, like.dtype), build)


def build_frozen_clip(
    spec: ClipSpec, *, method: str = "naclip", with_text: bool = True, pamr: bool | None = None
) -> FrozenClipSegmenter:
    """Build a training-free segmenter in eval mode, every parameter frozen.

    Args:
        spec: which CLIP and weights; its ``image_size`` is replaced by the model's native one
            (the original positional table, resized per window grid as the methods' code does).
        method: ``maskclip``, ``sclip``, ``clearclip`` or ``naclip`` (default; best published).
        with_text: keep the text tower (needed to encode vocabularies).
        pamr: PAMR refinement; None = the method's published default (on for NACLIP only).

    Raises:
        ValueError: unknown method.
        WeightsError: CLIP weights requested but unavailable (names ``--clip-weights``).
    """
    if method not in RECIPES:
        raise ValueError(
            f"unknown training-free method {method!r}; choose one of {', '.join(sorted(RECIPES))}"
        )
    recipe = RECIPES[method]
    assert set(RECIPES) == set(LAST_BLOCKS)
    spec = dataclasses.replace(spec, image_size=native_image_size(spec))
    visual, clip = build_towers(spec)
    use_pamr = recipe.use_pamr if pamr is None else pamr
    model = FrozenClipSegmenter(
        visual,
        method,
        recipe,
        pamr=PAMR() if use_pamr else None,
        text=clip if with_text else None,
        tokenizer=tokenizer_for(spec) if with_text else None,
    )
    logger.info(
        "training-free %s on %s (crop %d, stride %d, short side %d, PAMR %s)",
        method,
        spec.model,
        recipe.crop,
        recipe.stride,
        recipe.short_side,
        use_pamr,
    )
    return model.eval()
