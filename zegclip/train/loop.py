"""Ray-free ZegCLIP training: optimiser groups, schedule, data order, train step, self-training.

Works for any model with ``mask_logits(images, text_emb)`` and ``trainable_state_dict()`` (ZegCLIP,
ZegOT). The official recipe (the official ``configs/voc12`` and ``configs/coco`` files):

* AdamW lr 2e-5, weight decay 0.01; prompts and head at ``lr_mult`` 10 (frozen CLIP has no
  group). LayerNorm parameters get no weight decay. Prompt embeddings *do* get decay (the official
  mmcv ``custom_keys`` match them as ``backbone``; kept). Note: mmcv applies only the first
  matching custom key, so the official runs in fact decayed their norms too; we follow the
  configs' stated intent (no decay on norms).
* Poly schedule (power 0.9, ``min_lr`` 1e-6 absolute for every group) with linear warm-up
  (1500 iterations, ratio 1e-6), evaluated from the step counter (the schedule has no state).
* Inductive: only seen classes are queries; unseen pixels are ignore (255).
* Transductive self-training from ``self_train_from``: all classes are queries, pixels whose GT is
  unseen get the on-the-fly pseudo-label (argmax over unseen sigmoid scores, no threshold). As in
  the official two-config setup, the optimiser state and the schedule restart at the switch
  (warm-up + poly over the remaining iterations).

Randomness is a function of (seed, rank, step / sample position): augmentation draws come from a
generator seeded per sample and torch's RNG (dropout) is reseeded every step, so a resumed run
repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zegclip.devices import autocast
from zegclip.train.augment import AugmentConfig, augment
from zegclip.train.config import TrainConfig
from zegclip.train.data import MACHINE, PairSource
from zegclip.train.losses import seg_loss
from zegclip.vocab import IGNORE_INDEX

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- optimiser

LR_MULT_PREFIXES = ("backbone.", "head.", "prompts.", "align.")


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: (lr_mult, decay) per trainable parameter.

    ZegCLIP's ``backbone.*`` (prompts) and ``head.*`` and ZegOT's ``prompts.*`` and ``align.*``
    train at ``lr * lr_mult`` (the official backbone/head multiplier); anything else trainable at
    ``lr``. Parameters of LayerNorm modules have weight decay 0.
    """
    norm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.LayerNorm)
        for p in m.parameters(recurse=False)
    }
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = cfg.lr_mult if name.startswith(LR_MULT_PREFIXES) else 1.0
        decay = 0.0 if id(p) in norm_params else cfg.weight_decay
        groups.setdefault((mult, decay), []).append(p)
    return [
        {"params": ps, "lr_mult": m, "weight_decay": d, "lr": cfg.lr * m}
        for (m, d), ps in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`."""
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)


def phase_of(step: int, cfg: TrainConfig) -> tuple[bool, int, int]:
    """(is_transductive, step within the phase, schedule length of the phase)."""
    if cfg.self_train_from is not None and step >= cfg.self_train_from:
        return True, step - cfg.self_train_from, cfg.max_iters - cfg.self_train_from
    return False, step, cfg.schedule_iters or cfg.max_iters


def scheduled_lr(base_lr: float, step: int, total: int, cfg: TrainConfig) -> float:
    """mmcv ``PolyLrUpdaterHook`` with linear warm-up at (0-based) ``step`` of ``total``."""
    coeff = (1 - step / total) ** cfg.power
    lr = (base_lr - cfg.min_lr) * coeff + cfg.min_lr
    if step < cfg.warmup_iters:
        k = (1 - step / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
        lr *= 1 - k
    return lr


def set_lr(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> float:
    """Set every group's lr for ``step``; returns the base (lr_mult 1) lr."""
    _, local, total = phase_of(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = scheduled_lr(cfg.lr * group["lr_mult"], local, total, cfg)
    return scheduled_lr(cfg.lr, local, total, cfg)


# ----------------------------------------------------------------------------- data order


class SampleStream:
    """Endless per-rank sample order: epoch-wise permutations, split round-robin across ranks.

    ``position`` counts draws (skipped bad pairs included) and is all a resume needs.
    """

    def __init__(
        self, num_items: int, *, seed: int, rank: int = 0, world_size: int = 1, position: int = 0
    ):
        self.num_items = num_items
        self.seed, self.rank, self.world_size = seed, rank, world_size
        if num_items < world_size:
            raise ValueError(f"{num_items} samples cannot feed {world_size} workers")
        self.per_rank = num_items // world_size  # equal length per rank (drop the tail)
        self.position = position

    def next(self) -> tuple[int, int]:
        """(item index, draw position) of the next sample."""
        epoch, offset = divmod(self.position, self.per_rank)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        index = int(perm[self.rank :: self.world_size][offset])
        self.position += 1
        return index, self.position - 1


def _sample(
    source: PairSource, aug: AugmentConfig, index: int, seed: int, rank: int, position: int
) -> tuple[np.ndarray, np.ndarray] | None:
    pair = source.load(index)
    if pair is None:
        return None
    return augment(*pair, aug, np.random.default_rng([seed, rank, position]))


def next_batch(
    source: PairSource,
    stream: SampleStream,
    aug: AugmentConfig,
    batch_size: int,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load and augment the next ``batch_size`` usable samples (bad pairs are skipped).

    Returns:
        images (B, 3, crop, crop) float32 and labels (B, crop, crop) int64 (class ids, 255).

    Raises:
        RuntimeError: every pair of the source is unusable.
    """
    done: list[tuple[np.ndarray, np.ndarray]] = []
    while len(done) < batch_size:
        if len(source.bad) == len(source):
            raise RuntimeError("every image/mask pair is unusable; see the warnings above")
        draws = [stream.next() for _ in range(batch_size - len(done))]
        args = [(source, aug, i, stream.seed, stream.rank, pos) for i, pos in draws]
        results = pool.map(lambda a: _sample(*a), args) if pool else (_sample(*a) for a in args)
        done.extend(r for r in results if r is not None)
    images = torch.from_numpy(np.stack([d[0] for d in done]))
    labels = torch.from_numpy(np.stack([d[1] for d in done]))
    return images, labels


# ----------------------------------------------------------------------------- targets


def inductive_targets(labels: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary ids -> seen-query ids; unseen and ignore pixels -> 255.

    Args:
        labels: (B, H, W) int64 ids in [0, C) or 255.
        seen: (C,) bool.
    """
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.long, device=labels.device)
    seen_ids = torch.nonzero(seen.to(labels.device)).flatten()
    lut[seen_ids] = torch.arange(len(seen_ids), device=labels.device)
    return lut[labels]


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor, labels: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Official transductive targets: unseen-GT pixels get the best unseen class.

    Args:
        logits: (B, C, H, W) mask logits at label resolution, all C classes as queries.
        labels: (B, H, W) int64 GT ids in [0, C) or 255.
        seen: (C,) bool.

    Returns:
        (B, H, W) int64: seen pixels and ignore pixels unchanged; every pixel whose GT is an
        unseen class gets ``argmax`` over unseen classes of the sigmoid scores (no threshold).
    """
    seen = seen.to(logits.device)
    scores = logits.float().sigmoid()
    scores = scores.masked_fill(seen.view(1, -1, 1, 1), -1.0)  # seen channels never win
    best_unseen = scores.argmax(dim=1)
    unseen_ids = torch.nonzero(~seen).flatten()
    is_unseen_gt = torch.isin(labels, unseen_ids)
    return torch.where(is_unseen_gt, best_unseen, labels)


# ----------------------------------------------------------------------------- step


def split_provenance(
    labels: torch.Tensor, pseudo_weight: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class ids without the :data:`MACHINE` mark, and the per-pixel loss weight.

    Args:
        labels: (B, H, W) int64 ids, 255, or id + MACHINE on machine-labelled pixels.
        pseudo_weight: weight of machine-labelled pixels (people's pixels weigh 1).

    Returns:
        (B, H, W) int64 ids in [0, C) or 255, and (B, H, W) float32 weights, or None when every
        pixel weighs 1 (the official loss, unchanged).
    """
    machine = labels >= MACHINE
    if not bool(machine.any()):
        return labels, None
    labels = torch.where(machine, labels - MACHINE, labels)
    if pseudo_weight == 1.0:
        return labels, None
    one = torch.ones((), dtype=torch.float32, device=labels.device)
    return labels, torch.where(machine, one * pseudo_weight, one)


@dataclass
class StepBatch:
    """One step's inputs: images (B, 3, H, W), labels (B, H, W), seen (C,) bool."""

    images: torch.Tensor
    labels: torch.Tensor
    seen: torch.Tensor


def train_step(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batch: StepBatch,
    step: int,
    cfg: TrainConfig,
) -> dict[str, float]:
    """One optimisation step (lr set for ``step``, forward, loss, backward, AdamW).

    Args:
        forward: :class:`MaskLogits` (possibly DDP-wrapped): images (B,3,H,W) and query class
            ids (N,) -> (B, N, h, w) logits.

    Returns:
        ``loss``, ``focal``, ``dice``, ``num_masks``, ``lr`` and ``transductive`` (0/1).
    """
    transductive, _, _ = phase_of(step, cfg)
    lr = set_lr(optimizer, step, cfg)
    labels, weight = split_provenance(batch.labels, cfg.pseudo_weight)
    device = batch.images.device
    all_ids = torch.arange(len(batch.seen), device=batch.seen.device)
    queries = all_ids if transductive else all_ids[batch.seen]
    with autocast(device, cfg.precision):
        logits = forward(batch.images, queries)
    logits = F.interpolate(
        logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
    )
    if transductive:
        targets = pseudo_labels(logits, labels, batch.seen)
    else:
        targets = inductive_targets(labels, batch.seen)
    loss, parts = seg_loss(
        logits,
        targets,
        focal_weight=cfg.focal_weight,
        dice_weight=cfg.dice_weight,
        pixel_weight=weight,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), **parts, "lr": lr, "transductive": float(transductive)}


def step_seed(seed: int, rank: int, step: int) -> int:
    """Torch seed of one step on one rank (dropout)."""
    return int(np.random.default_rng([seed, rank, step, 7]).integers(2**62))


class MaskLogits(nn.Module):
    """``forward(images, class_ids)`` -> mask logits, so DDP can wrap the whole step's graph.

    Models whose class embeddings are learned (ZegOT's prompt contexts, flagged by
    ``learns_text_prompts``) re-encode the vocabulary inside this forward every step, so their
    context gradients are synchronised by DDP; others use the fixed ``text_emb``.

    Args:
        model: ZegCLIP-family model.
        names: C class names, in label-id order.
        text_emb: (C, ...) fixed embeddings; None for models that learn their text prompts.
    """

    def __init__(
        self, model: nn.Module, names: Sequence[str], text_emb: torch.Tensor | None = None
    ):
        super().__init__()
        self.model = model
        self.names = list(names)
        self.learns_text = bool(getattr(model, "learns_text_prompts", False))
        if not self.learns_text and text_emb is None:
            raise ValueError("text_emb is required for models with fixed class embeddings")
        self.register_buffer("text_emb", text_emb, persistent=False)

    def forward(self, images: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W); class_ids (N,) int64. Returns (B, N, h, w) logits."""
        emb = self.model.encode_vocabulary(self.names) if self.learns_text else self.text_emb
        return self.model.mask_logits(images, emb[class_ids.to(emb.device)])


def seen_vector(names: Sequence[str], unseen: Sequence[str]) -> torch.Tensor:
    """(C,) bool, False for the unseen names (case-insensitive).

    Raises:
        ValueError: an unseen name is not a class, or no class is seen.
    """
    folded = [n.casefold() for n in names]
    unknown = [u for u in unseen if u.casefold() not in folded]
    if unknown:
        raise ValueError(f"unseen classes {unknown} are not in the classes file")
    unseen_set = {u.casefold() for u in unseen}
    seen = torch.tensor([n not in unseen_set for n in folded], dtype=torch.bool)
    if not bool(seen.any()):
        raise ValueError("every class is unseen; at least one class must be seen for training")
    return seen


class Trainer:
    """The training loop of one worker (rank); DDP-agnostic (pass a wrapped ``forward``).

    Args:
        model: the model (trainable parameters already ``requires_grad``), on ``device``.
        cfg: optimisation settings.
        source: training pairs. aug: augmentation settings.
        forward: :class:`MaskLogits` over the model (possibly DDP-wrapped).
        seen: (C,) bool.
        device: where batches go.
        rank / world_size: this worker's place in the data split.
        load_threads: threads decoding and augmenting a batch (0 = in the loop).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        source: PairSource,
        aug: AugmentConfig,
        forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        seen: torch.Tensor,
        *,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        load_threads: int = 0,
    ):
        self.model, self.cfg, self.source, self.aug = model, cfg, source, aug
        self.seen = seen.to(device)
        self.device = device
        self.forward = forward
        self.rank = rank
        self.optimizer = build_optimizer(model, cfg)
        self.stream = SampleStream(len(source), seed=cfg.seed, rank=rank, world_size=world_size)
        self.step = 0
        self.pool = ThreadPoolExecutor(load_threads) if load_threads > 0 else None

    @property
    def is_transductive(self) -> bool:
        """Whether the last completed step was a self-training step."""
        return self.step > 0 and phase_of(self.step - 1, self.cfg)[0]

    def state_dict(self) -> dict:
        """Everything besides the weights that a resume needs (plain types and tensors only)."""
        return {
            "step": self.step,
            "position": self.stream.position,
            "optimizer": self.optimizer.state_dict(),
            "seed": self.cfg.seed,
            "world_size": self.stream.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (same seed and world size required).

        Raises:
            ValueError: the run's seed or world size differs from the saved one.
        """
        for key, now in (("seed", self.cfg.seed), ("world_size", self.stream.world_size)):
            if state[key] != now:
                raise ValueError(f"resume with {key}={now} but the run used {state[key]}")
        self.step = int(state["step"])
        self.stream.position = int(state["position"])
        self.optimizer.load_state_dict(state["optimizer"])

    def train_one(self) -> dict[str, float]:
        """Run step ``self.step`` and advance; returns its metrics (``step`` included)."""
        if self.cfg.self_train_from is not None and self.step == self.cfg.self_train_from:
            logger.info("step %d: switching to transductive self-training", self.step)
            self.optimizer = build_optimizer(self.model, self.cfg)
        torch.manual_seed(step_seed(self.cfg.seed, self.rank, self.step))
        images, labels = next_batch(
            self.source, self.stream, self.aug, self.cfg.batch_size, self.pool
        )
        batch = StepBatch(
            images.to(self.device, non_blocking=True),
            labels.to(self.device, non_blocking=True),
            self.seen,
        )
        self.model.train()
        out = train_step(self.forward, self.optimizer, batch, self.step, self.cfg)
        out["step"] = float(self.step)
        self.step += 1
        return out
