"""The host-side predictor as it was before issue 11, kept verbatim as a test oracle (and the
"before" baseline of ``bench/bench_gpu.py --legacy`` up to commit c207710): crop scores copied to
the host as float32, stitching, resize, activation and argmax on the CPU, float32 confidence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from zegclip.models.scorer import DenseScorer

BACKGROUND = -1  # synonym_index value of rows that mean "no class" (background words)


@dataclass
class LegacyPrediction:
    """One image's labels.

    Attributes:
        label_map: (H, W) uint8 when C <= 255 classes else uint16; ``ignore_index`` = unlabelled.
        confidence: (H, W) float32, score of the chosen class (its synonym max).
        class_counts: (C,) int64 labelled pixels per class.
    """

    label_map: np.ndarray
    confidence: np.ndarray
    class_counts: np.ndarray


def ignore_index_for(num_classes: int) -> int:
    """255 for uint8 label maps (<= 255 classes), else 65535."""
    return 255 if num_classes <= 255 else 65535


class LegacySegPredictor:
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
    ):
        self.scorer = scorer
        self.device = torch.device(device)
        self.text_emb = torch.as_tensor(np.asarray(text_emb), dtype=torch.float32).to(self.device)
        index = np.asarray(synonym_index, dtype=np.int64)
        self.index = torch.from_numpy(np.where(index == BACKGROUND, num_classes, index))
        self.num_classes = num_classes
        self.seen = None if seen is None else torch.as_tensor(np.asarray(seen), dtype=torch.bool)
        self.min_score = min_score
        self.ignore_index = ignore_index_for(num_classes)
        self.precision = precision
        self.max_crops = max_crops

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray]) -> list[LegacyPrediction]:
        """Args: images: HWC uint8 RGB of any sizes. Returns one :class:`Prediction` each."""
        inputs = [self.scorer.preprocess(img) for img in images]
        with _mha_fastpath(self.device.type == "cuda"):
            scores = self._stitched_scores(inputs)
        return [self._finish(s, x, img.shape[:2]) for s, x, img in zip(scores, inputs, images)]

    def _stitched_scores(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        jobs = [(i, w) for i, x in enumerate(inputs) for w in self.scorer.windows(*x.shape[-2:])]
        totals = [None] * len(inputs)
        counts = [torch.zeros(x.shape[-2:]) for x in inputs]
        for start in range(0, len(jobs), self.max_crops):
            chunk = jobs[start : start + self.max_crops]
            for (i, (y1, y2, x1, x2)), s in zip(chunk, self._score_crops(inputs, chunk)):
                if totals[i] is None:
                    totals[i] = torch.zeros((s.shape[0], *inputs[i].shape[-2:]))
                totals[i][:, y1:y2, x1:x2] += s
                counts[i][y1:y2, x1:x2] += 1
        return [t / c for t, c in zip(totals, counts)]

    def _score_crops(self, inputs: list[torch.Tensor], chunk: list) -> list[torch.Tensor]:
        crops = [inputs[i][0, :, y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk]
        out: list[torch.Tensor] = []
        for shape in dict.fromkeys(c.shape for c in crops):  # same-size crops share a forward
            group = [k for k, c in enumerate(crops) if c.shape == shape]
            batch = torch.stack([crops[k] for k in group]).to(self.device)
            with self._autocast():
                scores = self.scorer.crop_scores(batch, self.text_emb, self.seen).float().cpu()
            out.extend(zip(group, scores))
        return [s for _, s in sorted(out, key=lambda kv: kv[0])]

    def _autocast(self):
        if self.device.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        return torch.autocast("cuda", dtype=dtype)

    def _finish(
        self, scores: torch.Tensor, image: torch.Tensor, size: tuple[int, int]
    ) -> LegacyPrediction:
        """(S, h, w) stitched scores of the preprocessed ``image`` -> Prediction at ``size``."""
        scores = self.scorer.refine(scores, image)
        scores = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]
        scores = self.scorer.activate(scores)
        per_class = _reduce_rows(scores, self.index, self.num_classes + 1)  # (C+1, H, W)
        confidence, labels = per_class.max(dim=0)
        unlabelled = labels == self.num_classes
        if self.min_score is not None:
            unlabelled |= confidence < self.min_score
        labels[unlabelled] = self.ignore_index
        dtype = np.uint8 if self.ignore_index == 255 else np.uint16
        label_map = labels.numpy().astype(dtype)
        counts = np.bincount(label_map[~unlabelled.numpy()].ravel(), minlength=self.num_classes)
        return LegacyPrediction(
            label_map,
            confidence.numpy().astype(np.float32),
            counts[: self.num_classes].astype(np.int64),
        )


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


def _reduce_rows(scores: torch.Tensor, index: torch.Tensor, num_out: int) -> torch.Tensor:
    """(S, H, W) -> (num_out, H, W), max over rows sharing an index; absent outputs -inf.

    With exactly one row per class and no background rows, the scores are returned as they are
    (num_out - 1 rows: the background bucket could never win).
    """
    if len(index) == num_out - 1 and bool((index == torch.arange(len(index))).all()):
        return scores
    out = scores.new_full((num_out, *scores.shape[1:]), float("-inf"))
    return out.scatter_reduce(0, index.view(-1, 1, 1).expand_as(scores), scores, reduce="amax")
