"""The optimisation settings of training, importable without torch (the jobs' ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: official VOC inductive, 20k iterations, batch 4 x 4 GPUs).

    Attributes:
        max_iters: total iterations (both phases).
        batch_size: images per worker and step.
        self_train_from: iteration where transductive self-training starts; None = inductive only.
        schedule_iters: length of the inductive phase's poly schedule; None = ``max_iters``
            (official transductive runs start from iteration 10k of a 20k inductive schedule).
    """

    max_iters: int = 20000
    batch_size: int = 4
    lr: float = 2e-5
    weight_decay: float = 0.01
    lr_mult: float = 10.0
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 0.9
    min_lr: float = 1e-6
    self_train_from: int | None = None
    schedule_iters: int | None = None
    focal_weight: float = 100.0
    dice_weight: float = 1.0
    seed: int = 0
    precision: str = "bf16"  # autocast dtype on CUDA; CPU always runs float32
    pseudo_weight: float = 1.0  # loss weight of machine-labelled (MACHINE-marked) pixels
