"""ZegOT configuration: a frozen dataclass stored in checkpoints like :class:`ZegCLIPConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from zegclip.clip import ClipSpec
from zegclip.models.config import FamilyConfig
from zegclip.models.zegot.sinkhorn import DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL


@dataclass(frozen=True)
class ZegOTConfig(FamilyConfig):
    """ZegOT architecture and inference settings.

    Attributes:
        clip: the frozen CLIP (image and text towers both frozen).
        family: model family tag read by :func:`zegclip.load_model` (always ``zegot``).
        num_prompts: N learnable prompt context sets per class. 4: OTSeg uses 6-8 hand-written
            templates; 4 learnable sets keep OT's prompt diversity while halving the text-tower
            work that training repeats every step (C x N sequences).
        num_context_tokens: M learnable context tokens per set, CoOp-style, prepended to the
            class name. 4, initialised from OTSeg's template prefixes ("a photo of a", ...),
            which are exactly 4 BPE tokens each (CoOp's generalising setting).
        layers: ViT blocks whose patch tokens are aligned (negative = from the end); the last
            three blocks, whose tokens survive CLIP's ``ln_post`` + ``proj`` best.
        sinkhorn_eps / sinkhorn_iters / sinkhorn_tol: OTSeg's 0.05 / 100 / 1e-6.
        seen_classes: classes seen in training; they get ``-seen_shift`` at inference.
        seen_shift: OTSeg/ZegCLIP's inductive 0.1 calibration.
        short_side / crop_size / stride: test-time resize and sliding window (512 / 512 / 426).
    """

    clip: ClipSpec = field(default_factory=ClipSpec)
    family: str = "zegot"
    num_prompts: int = 4
    num_context_tokens: int = 4
    layers: tuple[int, ...] = (-3, -2, -1)
    sinkhorn_eps: float = DEFAULT_EPS
    sinkhorn_iters: int = DEFAULT_MAX_ITER
    sinkhorn_tol: float = DEFAULT_TOL
    seen_classes: tuple[str, ...] = ()
    seen_shift: float = 0.1
    short_side: int = 512
    crop_size: int = 512
    stride: int = 426

    def __post_init__(self) -> None:
        if self.family != "zegot":
            raise ValueError(f"ZegOTConfig.family must be 'zegot', got '{self.family}'")
        if self.num_prompts < 1 or self.num_context_tokens < 1 or not self.layers:
            raise ValueError("ZegOT needs >= 1 prompt, >= 1 context token and >= 1 aligned layer")
