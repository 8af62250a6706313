"""Images in, label maps out: the model side of the pipeline's ``Predictor`` contract.

``SegPredictor`` works with any :class:`~zegclip.models.scorer.DenseScorer` (ZegCLIP, ZegOT,
training-free CLIP): it preprocesses each image, batches sliding-window crops across images,
stitches per-class scores, refines them, resizes to the original size (bilinear), activates,
reduces synonyms (max) and takes the argmax. Everything after preprocessing runs on the
predictor's device (see :mod:`zegclip.reduce` for the chunked class reduction); only the label
map, the uint8 confidence and per-class counts and confidence sums are copied to the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zegclip.devices import autocast
from zegclip.models.scorer import DenseScorer
from zegclip.reduce import DEFAULT_MAX_ELEMENTS, best_rows
from zegclip.vocab import IGNORE_INDEX

BACKGROUND = -1  # synonym_index value of rows that mean "no class" (background words)


@dataclass
class Prediction:
    """One image's labels.

    Attributes:
        label_map: (H, W) uint8 when C <= 255 classes else uint16; ``ignore_index`` = unlabelled.
        confidence: (H, W) uint8 ``round(255 * clip(score, 0, 1))`` of the chosen class's score
            (its synonym max), rounding half to even (``torch.round``, like ``numpy.rint``).
        class_counts: (C,) int64 labelled pixels per class.
        confidence_sums: (C,) float64 sum of the unquantised scores over each class's pixels
            (``confidence_sums / class_counts`` is the exact mean confidence).
    """

    label_map: np.ndarray
    confidence: np.ndarray
    class_counts: np.ndarray
    confidence_sums: np.ndarray


def ignore_index_for(num_classes: int) -> int:
    """``IGNORE_INDEX`` (255) for uint8 label maps (<= 255 classes), else 65535 (uint16)."""
    return IGNORE_INDEX if num_classes <= IGNORE_INDEX else 65535


class SegPredictor:
    """Batch predictor over a fixed vocabulary.

    Args:
        scorer: the model (see :class:`DenseScorer`), already on ``device``.
        text_emb: (S, D) float32 embeddings, one row per synonym (or background word).
        synonym_index: (S,) int class of each row; ``BACKGROUND`` rows vote for "unlabelled".
        num_classes: C.
        seen: optional (S,) bool rows that get the inductive seen-class shift.
        min_score: pixels whose best score is below this become unlabelled (None: off).
        device: torch device.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; CUDA only).
        max_crops: crops per forward pass (bounds activation memory).
        max_elements: full-resolution values per class chunk (bounds memory for large
            vocabularies and photos; see :mod:`zegclip.reduce`).
        compile: run ``scorer.crop_scores`` through ``torch.compile`` (static shapes: crop
            batches are padded to ``max_crops``, so each crop size compiles once; see
            :meth:`warm_up`).
    """

    def __init__(
        self,
        scorer: DenseScorer,
        text_emb: np.ndarray | torch.Tensor,
        synonym_index: np.ndarray,
        num_classes: int,
        *,
        seen: np.ndarray | None = None,
        min_score: float | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        max_crops: int = 8,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        compile: bool = False,
    ):
        self.scorer = scorer
        self.device = torch.device(device)
        self.text_emb = torch.as_tensor(np.asarray(text_emb), dtype=torch.float32).to(self.device)
        index = np.asarray(synonym_index, dtype=np.int64)
        index = np.where(index == BACKGROUND, num_classes, index)
        order = np.argsort(index, kind="stable")  # rows by class, background (C) last
        self.row_order = None if (order == np.arange(len(order))).all() else order
        self.index = torch.from_numpy(index[order]).to(self.device)
        self.num_classes = num_classes
        self.seen = None
        if seen is not None:
            self.seen = torch.as_tensor(np.asarray(seen), dtype=torch.bool).to(self.device)
        self.min_score = min_score
        self.ignore_index = ignore_index_for(num_classes)
        self.precision = precision
        self.max_crops = max_crops
        self.max_elements = max_elements
        self.compiled = compile
        self._forward = torch.compile(scorer.crop_scores, dynamic=False) if compile else None

    def warm_up(self) -> None:
        """One prediction on a blank 512x512 image: compiles the full-crop forward (every
        recipe's short side is at least its crop, so real photos only use full crops)."""
        self.predict([np.zeros((512, 512, 3), dtype=np.uint8)])

    @torch.inference_mode()
    def predict(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Prediction]:
        """One :class:`Prediction` per image.

        Args:
            images: HWC uint8 RGB of any sizes; with ``sizes``, already resized by
                ``scorer.prepare`` (e.g. in a pipeline's CPU decode tasks) and normalised here,
                on the device.
            sizes: (H, W) of each original image (the label maps' size), or None when
                ``images`` are the originals.
        """
        if sizes is None:
            inputs = [self.scorer.preprocess(img).to(self.device) for img in images]
            sizes = [img.shape[:2] for img in images]
        else:
            inputs = [self._normalise(img) for img in images]
        with _mha_fastpath(self.device.type == "cuda"):
            scores = self._stitched_scores(inputs)
        return [self._finish(s, x, tuple(size)) for s, x, size in zip(scores, inputs, sizes)]

    def _normalise(self, prepared: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(prepared))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return self.scorer.normalise(tensor.to(self.device, non_blocking=True))

    def _stitched_scores(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        jobs = [(i, w) for i, x in enumerate(inputs) for w in self.scorer.windows(*x.shape[-2:])]
        totals = [None] * len(inputs)
        counts = [torch.zeros(x.shape[-2:], device=self.device) for x in inputs]
        for start in range(0, len(jobs), self.max_crops):
            chunk = jobs[start : start + self.max_crops]
            for (i, (y1, y2, x1, x2)), s in zip(chunk, self._score_crops(inputs, chunk)):
                if totals[i] is None:
                    totals[i] = s.new_zeros((s.shape[0], *inputs[i].shape[-2:]))
                totals[i][:, y1:y2, x1:x2] += s
                counts[i][y1:y2, x1:x2] += 1
        return [t / c for t, c in zip(totals, counts)]

    def _score_crops(self, inputs: list[torch.Tensor], chunk: list) -> list[torch.Tensor]:
        crops = [inputs[i][0, :, y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk]
        out: list[torch.Tensor] = []
        for shape in dict.fromkeys(c.shape for c in crops):  # same-size crops share a forward
            group = [k for k, c in enumerate(crops) if c.shape == shape]
            with autocast(self.device, self.precision):
                scores = self._crop_scores(torch.stack([crops[k] for k in group]))
            out.extend(zip(group, scores))
        return [s for _, s in sorted(out, key=lambda kv: kv[0])]

    def _crop_scores(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) crops -> (B, S, h, w) float32; compiled batches padded to ``max_crops``."""
        if self._forward is None:
            return self.scorer.crop_scores(batch, self.text_emb, self.seen).float()
        n = batch.shape[0]
        if n < self.max_crops:
            batch = torch.cat([batch, batch.new_zeros((self.max_crops - n, *batch.shape[1:]))])
        return self._forward(batch, self.text_emb, self.seen)[:n].float()

    def _finish(
        self, scores: torch.Tensor, image: torch.Tensor, size: tuple[int, int]
    ) -> Prediction:
        """(S, h, w) stitched scores of the preprocessed ``image`` -> Prediction at ``size``."""
        scores = self.scorer.refine(scores, image)
        if self.row_order is not None:
            scores = scores[torch.from_numpy(self.row_order).to(scores.device)]
        best, label = best_rows(
            scores,
            self.index,
            size,
            activate=self.scorer.activate,
            softmax_scale=self.scorer.row_softmax_scale,
            max_elements=self.max_elements,
        )
        unlabelled = label == self.num_classes
        if self.min_score is not None:
            unlabelled |= best < self.min_score
        bucket = label.masked_fill(unlabelled, self.num_classes).flatten()  # C = unlabelled
        counts = torch.bincount(bucket, minlength=self.num_classes + 1)[: self.num_classes]
        sums = torch.zeros(self.num_classes + 1, dtype=torch.float64, device=best.device)
        sums = sums.index_add_(0, bucket, best.flatten().double())[: self.num_classes]
        labels = label.masked_fill(unlabelled, self.ignore_index)
        labels = labels.to(torch.uint8 if self.ignore_index == IGNORE_INDEX else torch.int32)
        label_map = labels.cpu().numpy()
        return Prediction(
            label_map if label_map.dtype == np.uint8 else label_map.astype(np.uint16),
            quantise_confidence(best).cpu().numpy(),
            counts.cpu().numpy().astype(np.int64),
            sums.cpu().numpy(),
        )


def quantise_confidence(score: torch.Tensor) -> torch.Tensor:
    """(H, W) float scores -> uint8 ``round(255 * clip(score, 0, 1))``, ties to even.

    Same values as ``pipeline.encode.quantise_confidence`` (``numpy.rint``) on the same floats.
    """
    return torch.round(score.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


@contextlib.contextmanager
def _mha_fastpath(enabled: bool):
    """PyTorch's fused MHA inference path: ~10% slower than the plain path for ViT-B/16 on CPU
    (measured here, as in perf-anchors.md), so it is used on CUDA only; numerics are the same."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
