"""One picklable spec from job flags to a ready predictor; what ``jobs/`` calls.

Driver: ``check_spec`` (fail before work), ``encode_vocabulary_for`` (once per run).
Actors: ``build_predictor`` (once per replica, with the driver's embeddings).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zegclip import validate
from zegclip.clip import ClipSpec
from zegclip.devices import PAMR_PRECISIONS, resolve_device, resolve_precision
from zegclip.io.embedding_cache import cached_embeddings, embedding_key, file_identity
from zegclip.io.registry import load_model, local_path
from zegclip.predictor import SegPredictor
from zegclip.preprocess import prepare_image
from zegclip.templates import resolve_templates
from zegclip.text import flat_names, synonym_index
from zegclip.vocab import Vocabulary
from zegclip.weights import redact_uri

logger = logging.getLogger(__name__)

DEFAULT_METHOD = "naclip"
# Crops per forward. GPU: ViT-B/16 ZegCLIP bf16 reaches 936 / 1,045 crops/s at 16 / 64 crops
# (H200, 3.6 GiB at 64; docs/gpu.md); CPU: 8 keeps activation memory small at no speed cost.
GPU_MAX_CROPS = 64
CPU_MAX_CROPS = 8


@dataclass(frozen=True)
class LabelerSpec:
    """Everything needed to rebuild the same predictor anywhere.

    Attributes:
        checkpoint: our checkpoint (``.safetensors``), an official ZegCLIP ``.pth``, local or URI;
            None = training-free frozen-CLIP mode (``method``).
        clip_model / clip_pretrained / clip_weights: the CLIP for training-free mode;
            ``clip_weights`` (path or URI) overrides the pretrained tag for offline clusters.
        method: training-free variant (maskclip, sclip, clearclip, naclip).
        templates: template set name, file or None for the model's default.
        background: extra words whose pixels become unlabelled (training-free mode).
        min_score: best-class score under which a pixel is unlabelled; None = model default.
        device: ``auto``, ``cpu``, ``cuda``.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16``, ``fp16`` (GPU
            autocast; ignored on CPU).
        compile: ``torch.compile`` the model's crop forward, warmed up when the predictor is
            built (once per actor).
        pamr_precision: ``fp32`` (the papers') or ``compute``: PAMR propagates in
            ``precision`` on CUDA (bf16: 0.02-0.05 % of labels change; docs/gpu.md).
    """

    checkpoint: str | None = None
    clip_model: str = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    clip_weights: str | None = None
    method: str = DEFAULT_METHOD
    templates: str | None = None
    background: tuple[str, ...] = ()
    min_score: float | None = None
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    pamr_precision: str = "fp32"

    @property
    def clip_spec(self) -> ClipSpec:
        """The CLIP of training-free mode.

        A ``clip_weights`` file keeps the activation of the ``clip_pretrained`` tag it stands in
        for (QuickGELU for ``openai``), which open_clip cannot tell from a bare file.
        """
        spec = ClipSpec(model=self.clip_model, pretrained=self.clip_pretrained)
        if not self.clip_weights:
            return spec
        from zegclip.clip import uses_quick_gelu

        return ClipSpec(
            model=self.clip_model, pretrained=self.clip_weights, quick_gelu=uses_quick_gelu(spec)
        )


def build_model(spec: LabelerSpec, *, with_text: bool = True) -> torch.nn.Module:
    """The scorer module (ZegCLIP, ZegOT or frozen CLIP) on CPU, eval mode."""
    if spec.checkpoint:
        return load_model(spec.checkpoint, with_text=with_text)
    from zegclip.models.trainfree.model import build_frozen_clip

    return build_frozen_clip(spec.clip_spec, method=spec.method, with_text=with_text)


def check_spec(spec: LabelerSpec, vocab: Vocabulary | None = None) -> None:
    """Fail fast on unusable settings, before any work is scheduled (see ``docs/validation.md``).

    Reads no more than file headers: names and numeric ranges, the checkpoint's header (ours)
    or keys (official ``.pth``), and in training-free mode the method, the CLIP model, its
    pretrained tag and whether a ``clip_weights`` file fits that model.

    Args:
        spec: the settings.
        vocab: when given, background words must not repeat its names.

    Raises:
        FileNotFoundError: checkpoint or CLIP weights missing (WeightsError: unusable weights).
        ValueError: invalid option values (CheckpointError: unusable checkpoint). Every
            message names the flag to fix.
    """
    validate.check_choice(spec.precision, validate.PRECISIONS, "--precision")
    validate.check_choice(spec.pamr_precision, PAMR_PRECISIONS, "--pamr-precision")
    validate.check_fraction(spec.min_score, "--min-score")
    validate.check_device(spec.device)
    validate.check_templates(spec.templates)
    validate.check_background(spec.background, vocab)
    validate.check_method(spec.method)
    if spec.checkpoint:
        validate.check_checkpoint(spec.checkpoint)
        return
    validate.check_clip_model(spec.clip_model)
    if spec.clip_weights:  # the tag then only picks the activation (see ``clip_spec``)
        validate.check_clip_weights(spec.clip_weights, spec.clip_model)
    else:
        validate.check_clip_source(
            spec.clip_model,
            spec.clip_pretrained,
            "--clip-pretrained",
            without_weights="--clip-pretrained none --min-score 0",
        )


def vocabulary_rows(spec: LabelerSpec, vocab: Vocabulary) -> tuple[list[str], np.ndarray]:
    """Names of every embedding row (synonyms, then background words) and their class index."""
    from zegclip.predictor import BACKGROUND

    names = flat_names(vocab) + list(spec.background)
    index = np.concatenate([synonym_index(vocab), np.full(len(spec.background), BACKGROUND)])
    return names, index.astype(np.int64)


def model_identity(spec: LabelerSpec) -> dict[str, Any]:
    """What determines the text embeddings: the spec plus the identity of local weight files."""
    fields = ("checkpoint", "clip_model", "clip_pretrained", "clip_weights", "method")
    identity: dict[str, Any] = {k: v for k, v in describe(spec).items() if k in fields}
    for flag, value in (("--checkpoint", spec.checkpoint), ("--clip-weights", spec.clip_weights)):
        if value:
            identity[flag] = file_identity(local_path(value, flag=flag))
    return identity


def encode_vocabulary_for(
    spec: LabelerSpec, vocab: Vocabulary, *, use_cache: bool = True
) -> np.ndarray:
    """(S, ...) float32 embeddings of every synonym and background word; once per run.

    Shape (S, D) for ZegCLIP and training-free mode; families with several prompts per class
    (ZegOT) add axes after S. The predictor passes them through unchanged.
    """
    names, _ = vocabulary_rows(spec, vocab)
    templates = resolve_templates(spec.templates) if spec.templates else None

    def compute() -> np.ndarray:
        model = build_model(spec, with_text=True).to(resolve_device(spec.device))
        chosen = templates or model.default_templates
        with torch.inference_mode():
            emb = model.encode_vocabulary(names, templates=chosen)
        logger.info("encoded %d vocabulary rows x %d templates", len(names), len(chosen))
        return emb.cpu().numpy().astype(np.float32)

    if not use_cache:
        return compute()
    key = embedding_key(model_identity(spec), names, templates or ())
    return cached_embeddings(key, compute)


def build_predictor(spec: LabelerSpec, vocab: Vocabulary, text_emb: np.ndarray) -> SegPredictor:
    """A ready predictor for one replica; the text tower is never built into it."""
    device = resolve_device(spec.device)
    model = build_model(spec, with_text=False).to(device)
    names, index = vocabulary_rows(spec, vocab)
    if text_emb.shape[0] != len(names):
        raise ValueError(f"{text_emb.shape[0]} embeddings for {len(names)} vocabulary rows")
    seen = model.seen_mask(names)
    min_score = spec.min_score if spec.min_score is not None else model.default_min_score
    predictor = SegPredictor(
        model,
        text_emb,
        index,
        len(vocab),
        seen=seen,
        min_score=min_score,
        device=device,
        precision=resolve_precision(spec.precision, device),
        compile=spec.compile,
        pamr_precision=spec.pamr_precision,
        max_crops=GPU_MAX_CROPS if device.type == "cuda" else CPU_MAX_CROPS,
    )
    if spec.compile:
        predictor.warm_up()
    return predictor


def min_score_in_use(spec: LabelerSpec) -> dict[str, Any]:
    """The unlabelled threshold :func:`build_predictor` applies, for run metadata, without
    building a model: ``{"value": float or None (no threshold), "default": bool}``.

    The default is the training-free recipe's, or for a checkpoint the mask scorers' (every
    checkpoint family, ZegCLIP and ZegOT, is a ``MaskLogitScorer``).
    """
    if spec.min_score is not None:
        return {"value": spec.min_score, "default": False}
    if spec.checkpoint:
        from zegclip.models.mask_scorer import MaskLogitScorer

        return {"value": MaskLogitScorer.default_min_score, "default": True}
    from zegclip.models.trainfree.model import RECIPES

    return {"value": RECIPES[spec.method].min_score, "default": True}


def image_preparer(spec: LabelerSpec) -> Callable[[np.ndarray], np.ndarray]:
    """The picklable CPU half of preprocessing (:meth:`DenseScorer.prepare`) for ``spec``:
    HWC uint8 RGB -> HWC uint8 with the official short side (cv2 bilinear, bit-identical).

    Pipelines run it in their CPU decode tasks and call ``predict(images, sizes)``. Training-free
    recipes know their short side; a checkpoint's is read from the model it builds (CPU, once).
    """
    if spec.checkpoint:
        short_side = build_model(spec, with_text=False).short_side
    else:
        from zegclip.models.trainfree.model import RECIPES

        short_side = RECIPES[spec.method].short_side
    return functools.partial(prepare_image, short_side=short_side)


def describe(spec: LabelerSpec) -> dict[str, Any]:
    """JSON-ready model description for run metadata; URIs lose any userinfo and query string.

    A checkpoint of ours that records its training data (``jobs/train.py``: sources, and how
    many pixels and images people and the machine labelled) adds it as ``training_data``.
    """
    out = {
        k: redact_uri(v) if isinstance(v, str) else v for k, v in dataclasses.asdict(spec).items()
    }
    if spec.checkpoint and str(spec.checkpoint).endswith(".safetensors"):
        from zegclip.io.checkpoint import training_data

        data = training_data(local_path(spec.checkpoint))
        if data is not None:
            out["training_data"] = data
    return out
