"""Images in, label maps out: the model side of the pipeline's ``Predictor`` contract.

``SegPredictor`` works with any :class:`~zegclip.models.scorer.DenseScorer` (ZegCLIP, ZegOT,
training-free CLIP): it preprocesses each image, batches sliding-window crops across images,
stitches per-class scores, refines them, resizes to the original size (bilinear), activates,
reduces synonyms (max) and takes the argmax. Everything after preprocessing runs on the
predictor's device, batched: images of one prepared and original size form a group that goes
through every step as one (N, ...) tensor (:mod:`zegclip.stitch` for the stitching,
:mod:`zegclip.reduce` for the chunked class reduction). Only the label maps, the uint8
confidence and per-class counts and confidence sums come back, in one device-to-host copy per
batch; nothing in between reads a device value on the host.

Several threads may call :meth:`SegPredictor.predict` at once (a pipeline actor with
``--actor-threads 2``): each thread queues its work on its own CUDA stream
(:func:`zegclip.devices.thread_stream`), so one batch's copy back to the host and packing
overlap the next batch's kernels. What the threads share is built once and made visible to
every stream (:func:`zegclip.devices.cached_on_device`; the constants and weights are
synchronised at construction and after warm-up); a compiled forward runs one call at a time
(``torch.compile`` is not thread-safe), which on CUDA only serialises its kernel launches.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zegclip.devices import autocast, cached_on_device, refine_dtype, thread_stream
from zegclip.models.scorer import DenseScorer
from zegclip.reduce import DEFAULT_MAX_ELEMENTS, best_rows
from zegclip.stitch import add_crops, coverage, gather_crops, plan_chunks
from zegclip.vocab import IGNORE_INDEX

# Stitched float32 scores alive at once per predict call: 4 GiB (171 rows at 512x683: 17 images).
DEFAULT_MAX_SCORE_ELEMENTS = 2**30
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
        max_score_elements: stitched float32 score values (images x rows x prepared pixels)
            alive at once in one ``predict`` call: a batch whose scores would exceed it runs
            in consecutive waves of images, each stitched, refined and reduced (its scores
            freed) before the next starts (:data:`DEFAULT_MAX_SCORE_ELEMENTS`, 4 GiB).
        compile: run ``scorer.crop_scores`` through ``torch.compile`` (static shapes: crop
            batches are padded to one of :func:`chunk_sizes`, each compiled once per crop size
            by :meth:`warm_up`). Off by default, on CUDA too, until a GPU run measures it.
            Also compiles ``scorer.refine`` (PAMR: one fused kernel per step), static per
            prepared size and number of classes, the group's image count dynamic.
        pamr_precision: ``fp32`` (the papers') or ``compute``: the refinement propagates in
            ``precision`` (bf16/fp16 storage, float32 sums; CUDA only, see
            :func:`zegclip.devices.refine_dtype`).

    ``predict`` may be called from several threads at once (see the module docstring).
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
        max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
        compile: bool = False,
        pamr_precision: str = "fp32",
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
        self._row_order = (
            None if self.row_order is None else torch.from_numpy(order).to(self.device)
        )
        self.seen = None  # decided here, once: no shift (and no host check) when nothing is seen
        if seen is not None and np.asarray(seen).any():
            self.seen = torch.as_tensor(np.asarray(seen), dtype=torch.bool).to(self.device)
        self.min_score = min_score
        self.ignore_index = ignore_index_for(num_classes)
        self.label_dtype = torch.uint8 if self.ignore_index == IGNORE_INDEX else torch.uint16
        self.precision = precision
        self.max_crops = max_crops
        self.max_elements = max_elements
        self.max_score_elements = max_score_elements
        self.compiled = compile
        self._forward = torch.compile(scorer.crop_scores, dynamic=False) if compile else None
        self.refine_dtype = refine_dtype(self.device, precision, pamr_precision)
        self._refine = torch.compile(scorer.refine, dynamic=False) if compile else scorer.refine
        self._coverage_cache: dict[tuple[int, int], torch.Tensor] = {}
        self._compiled_call = threading.Lock()  # torch.compile is not thread-safe
        _synchronise(self.device)  # constants and weights ready for every thread's stream

    def warm_up(self) -> None:
        """Compiles the full-crop forward at every padded chunk size (:func:`chunk_sizes`;
        every recipe's short side is at least its crop, so real photos only use full crops),
        then runs one prediction on a blank 512x512 image."""
        y1, y2, x1, x2 = self.scorer.windows(4096, 4096)[0]
        cuda = self.device.type == "cuda"  # the attention path predict uses (a compile guard)
        with torch.inference_mode(), _mha_fastpath(cuda), autocast(self.device, self.precision):
            for n in chunk_sizes(self.max_crops):
                self._crop_scores(torch.zeros((n, 3, y2 - y1, x2 - x1), device=self.device))
        self.predict([np.zeros((512, 512, 3), dtype=np.uint8)])
        _synchronise(self.device)  # what warm-up cached is ready for every thread's stream

    @torch.inference_mode()
    def predict(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Prediction]:
        """One :class:`Prediction` per image.

        Images of the same prepared and original size go through the device together: one set
        of kernels per group for stitching, refinement, resizing, reduction and counting, and
        one device-to-host copy for the whole batch (see :mod:`zegclip.stitch`).

        Args:
            images: HWC uint8 RGB of any sizes; with ``sizes``, already resized by
                ``scorer.prepare`` (e.g. in a pipeline's CPU decode tasks) and normalised here,
                on the device.
            sizes: (H, W) of each original image (the label maps' size), or None when
                ``images`` are the originals.
        """
        if not len(images):
            return []
        with thread_stream(self.device):  # this thread's own stream (CUDA)
            pieces = []
            for wave in self._waves(self._groups(images, sizes)):
                with _mha_fastpath(self.device.type == "cuda"):
                    totals = self._stitched_scores(wave)
                for g in wave:
                    pieces.extend(self._finish(totals.pop(0), g))  # frees each group's scores
            return unpack(pieces, to_host(pieces, self.device), len(images))

    def _groups(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]] | None
    ) -> list[_Group]:
        """Images grouped by (prepared size, original size), each group one (N, 3, h, w)."""
        if sizes is None:
            inputs = [self.scorer.preprocess(img) for img in images]  # (1, 3, h, w) host
            sizes = [img.shape[:2] for img in images]
            shapes = [tuple(x.shape[-2:]) for x in inputs]
        else:
            inputs = [np.ascontiguousarray(img) for img in images]  # (h, w, 3) uint8 host
            shapes = [img.shape[:2] for img in inputs]
        keys: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(shapes, (tuple(s) for s in sizes))):
            keys.setdefault(key, []).append(i)
        groups = []
        for (_, size), members in keys.items():
            if inputs[members[0]].ndim == 4:  # preprocessed originals
                batch = self._to_device(torch.cat([inputs[i] for i in members]))
            else:
                stacked = torch.from_numpy(np.stack([inputs[i] for i in members]))
                batch = self.scorer.normalise(self._to_device(stacked))
            groups.append(_Group(members, batch, size))
        return groups

    def _waves(self, groups: list[_Group]) -> list[list[_Group]]:
        """``groups`` cut into waves whose stitched scores (images x S rows x h x w) stay
        within ``max_score_elements`` (a group split across waves when it alone exceeds it;
        one image per wave at least). Small batches are one wave: the common case."""
        rows = self.text_emb.shape[0]
        waves: list[list[_Group]] = [[]]
        used = 0
        for group in groups:
            per_image = rows * group.images.shape[-2] * group.images.shape[-1]
            step = max(1, self.max_score_elements // per_image)
            for start in range(0, len(group.members), step):
                part = group.part(start, start + step)
                need = per_image * len(part.members)
                if waves[-1] and used + need > self.max_score_elements:
                    waves.append([])
                    used = 0
                waves[-1].append(part)
                used += need
        return waves

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Host tensor -> device; pinned and non-blocking on CUDA."""
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def _stitched_scores(self, groups: list[_Group]) -> list[torch.Tensor]:
        """Per group (N, S, h, w) float32 window-averaged crop scores."""
        windows = [self.scorer.windows(*g.images.shape[-2:]) for g in groups]
        totals: list[torch.Tensor | None] = [None] * len(groups)
        chunks = plan_chunks(windows, [len(g.members) for g in groups], self.max_crops)
        images = [g.images for g in groups]
        for chunk in chunks:
            with autocast(self.device, self.precision):
                scores = self._crop_scores(gather_crops(images, chunk))
            for k in {r.group for r in chunk}:
                if totals[k] is None:
                    shape = (len(groups[k].members), scores.shape[1], *images[k].shape[-2:])
                    totals[k] = scores.new_zeros(shape)
            add_crops(totals, chunk, scores)
            del scores
        return [t / self._coverage(w, g) for t, w, g in zip(totals, windows, groups)]

    def _coverage(self, windows: list, group: _Group) -> torch.Tensor:
        """(h, w) windows per pixel of a prepared size, computed once per size on the device."""
        h, w = group.images.shape[-2:]
        build = lambda: coverage(h, w, windows).to(self.device)  # noqa: E731
        return cached_on_device(self._coverage_cache, (h, w), build)

    def _crop_scores(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) crops -> (B, S, h, w) float32; compiled batches padded to the next
        size of :func:`chunk_sizes`."""
        if self._forward is None:
            return self.scorer.crop_scores(batch, self.text_emb, self.seen).float()
        n = batch.shape[0]
        size = next(s for s in reversed(chunk_sizes(self.max_crops)) if s >= n)
        if n < size:
            batch = torch.cat([batch, batch.new_zeros((size - n, *batch.shape[1:]))])
        with self._compiled_call:  # one thread at a time; on CUDA: while it queues kernels
            scores = self._forward(batch, self.text_emb, self.seen)
        return scores[:n].float()

    def _finish(self, scores: torch.Tensor, group: _Group) -> list[_Piece]:
        """(N, S, h, w) stitched scores of a group -> its device results, ``max_elements``
        full-size values at a time (images in sub-batches when one class does not fit)."""
        scores = self._refine_scores(scores, group.images)
        if self.row_order is not None:
            scores = scores.index_select(1, self._row_order)
        step = max(1, self.max_elements // (group.size[0] * group.size[1]))
        out = []
        for start in range(0, len(group.members), step):
            members = group.members[start : start + step]
            out.append(self._reduce(scores[start : start + step], members, group.size))
        return out

    def _refine_scores(self, scores: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """``scorer.refine`` of (N, S, h, w) scores with (N, 3, h, w) images, in
        :attr:`refine_dtype`; compiled, one graph for every N > 1 (and one for N = 1), called
        by one thread at a time like the compiled forward."""
        if not self.compiled:
            return self._refine(scores, images, dtype=self.refine_dtype)
        torch._dynamo.maybe_mark_dynamic(scores, 0)
        torch._dynamo.maybe_mark_dynamic(images, 0)
        with self._compiled_call:
            return self._refine(scores, images, dtype=self.refine_dtype)

    def _reduce(self, scores: torch.Tensor, members: list[int], size: tuple[int, int]) -> _Piece:
        """(n, S, h, w) scores -> labels, uint8 confidence, counts and sums of n images."""
        best, label = best_rows(
            scores,
            self.index,
            size,
            activate=self.scorer.activate,
            softmax_scale=self.scorer.row_softmax_scale,
            max_elements=self.max_elements,
        )
        n, c = len(members), self.num_classes
        unlabelled = label == c
        if self.min_score is not None:
            unlabelled |= best < self.min_score
        bucket = label.masked_fill(unlabelled, c)
        offsets = torch.arange(0, n * (c + 1), c + 1, device=label.device).view(n, 1, 1)
        flat = (bucket + offsets).flatten()
        ones = torch.ones((), dtype=torch.int64, device=flat.device).expand(flat.numel())
        counts = torch.zeros(n * (c + 1), dtype=torch.int64, device=flat.device)
        counts = counts.scatter_add_(0, flat, ones).view(n, c + 1)[:, :c]
        sums = torch.zeros(n * (c + 1), dtype=torch.float64, device=flat.device)
        sums = sums.index_add_(0, flat, best.flatten().double()).view(n, c + 1)[:, :c]
        labels = label.masked_fill(unlabelled, self.ignore_index).to(self.label_dtype)
        return _Piece(members, labels, quantise_confidence(best), counts, sums)


@dataclass
class _Group:
    """Images of one prepared and one original size: ``members`` (their batch positions),
    ``images`` (N, 3, h, w) float32 normalised on the device, ``size`` the original (H, W)."""

    members: list[int]
    images: torch.Tensor
    size: tuple[int, int]

    def part(self, start: int, stop: int) -> _Group:
        """Members ``start:stop`` (their images a view of this group's)."""
        if start == 0 and stop >= len(self.members):
            return self
        return _Group(self.members[start:stop], self.images[start:stop], self.size)


@dataclass
class _Piece:
    """Device results of ``members``: labels (n, H, W) uint8/uint16, confidence (n, H, W)
    uint8, counts (n, C) int64, sums (n, C) float64."""

    members: list[int]
    labels: torch.Tensor
    confidence: torch.Tensor
    counts: torch.Tensor
    sums: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The four result tensors, 8-byte ones first (keeps host views aligned)."""
        return self.counts, self.sums, self.labels, self.confidence


def to_host(pieces: list[_Piece], device: torch.device) -> np.ndarray:
    """Every piece's tensors as one byte buffer on the host: one device-to-host copy per batch
    (pinned, non-blocking, then one wait on CUDA).

    Returns:
        The (bytes,) uint8 buffer holding the pieces' tensors in :meth:`_Piece.tensors` order,
        all pieces' 8-byte tensors first.
    """
    order = [p.tensors()[k] for k in range(4) for p in pieces]
    flat = torch.cat([t.contiguous().view(-1).view(torch.uint8) for t in order])
    if device.type == "cuda":
        host = torch.empty(flat.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(flat, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        done.synchronize()
    else:
        host = flat
    return host.numpy()


def unpack(pieces: list[_Piece], buffer: np.ndarray, count: int) -> list[Prediction]:
    """The host buffer of :func:`to_host` -> one :class:`Prediction` per batch position."""
    arrays: dict[int, list[np.ndarray]] = {id(p): [] for p in pieces}
    offset = 0
    for k in range(4):
        for p in pieces:
            t = p.tensors()[k]
            dtype = np.dtype(str(t.dtype).removeprefix("torch."))
            nbytes = t.numel() * dtype.itemsize
            arrays[id(p)].append(buffer[offset : offset + nbytes].view(dtype).reshape(t.shape))
            offset += nbytes
    out: list[Prediction | None] = [None] * count
    for p in pieces:
        counts, sums, labels, confidence = arrays[id(p)]
        for j, i in enumerate(p.members):
            out[i] = Prediction(labels[j], confidence[j], counts[j], sums[j])
    return out


def chunk_sizes(max_crops: int) -> list[int]:
    """Crop counts the compiled forward is built for, largest first: ``max_crops`` and its
    halvings down to an eighth (64: 64, 32, 16, 8). A batch's chunks are full (``max_crops``)
    except its last, padded to the smallest size that holds it, so a batch of 16 photos with two
    crops each runs one 32-crop forward, not a 64-crop one half padding."""
    sizes = [max_crops]
    while len(sizes) < 4 and sizes[-1] % 2 == 0 and sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return sizes


def quantise_confidence(score: torch.Tensor) -> torch.Tensor:
    """(H, W) float scores -> uint8 ``round(255 * clip(score, 0, 1))``, ties to even.

    Same values as ``pipeline.encode.quantise_confidence`` (``numpy.rint``) on the same floats.
    """
    return torch.round(score.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def _synchronise(device: torch.device) -> None:
    """Wait for every queued kernel and copy on ``device`` (CUDA; nothing elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_FASTPATH_LOCK = threading.Lock()
_fastpath_active: list[list[bool]] = []  # [enabled] of each open _mha_fastpath, oldest first
_fastpath_before = [True]  # the switch before the oldest open one


@contextlib.contextmanager
def _mha_fastpath(enabled: bool):
    """PyTorch's fused MHA inference path: ~10% slower than the plain path for ViT-B/16 on CPU
    (measured here, as in perf-anchors.md), so it is used on CUDA only; numerics are the same.

    The switch is process-wide and calls may overlap (threads) or nest: each exit sets it to
    the newest still-open call's value, the last exit to the value from before the first."""
    entry = [enabled]  # a distinct object per call, removed by identity
    with _FASTPATH_LOCK:
        if not _fastpath_active:
            _fastpath_before[0] = torch.backends.mha.get_fastpath_enabled()
        _fastpath_active.append(entry)
        torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        with _FASTPATH_LOCK:
            del _fastpath_active[next(i for i, e in enumerate(_fastpath_active) if e is entry)]
            last = _fastpath_active[-1][0] if _fastpath_active else _fastpath_before[0]
            torch.backends.mha.set_fastpath_enabled(last)
