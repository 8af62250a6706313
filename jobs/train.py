"""Train ZegCLIP (inductive, optionally + transductive self-training) with Ray Train or in-process.

Examples::

    # CamVid on one machine without Ray (debugging)
    python jobs/train.py --images camvid/train --masks camvid/trainannot \\
        --classes camvid/classes.txt --unseen car,pedestrian --output runs/camvid --num-workers 0

    # 4 GPU workers with DDP, VOC split, self-training in the second half
    python jobs/train.py --data s3://bucket/voc --classes voc.txt --unseen voc-unseen.txt \\
        --reduce-zero-label --max-iters 20000 --self-train-from 10000 \\
        --output s3://bucket/runs/voc --num-workers 4 --use-gpu

The training loop itself is :class:`zegclip.train.loop.Trainer` (Ray-free); this file parses flags,
validates inputs on the driver, and runs one loop per worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # `python jobs/train.py` from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only what --help needs is imported here (zegclip's package import is lazy); torch, open_clip
# and the training code are imported by the functions that use them, after the flags parse.
import zegclip  # noqa: E402
from jobs.flags import JobHelpFormatter, add_dataclass_flags  # noqa: E402
from zegclip.train.config import TrainConfig  # noqa: E402

if TYPE_CHECKING:
    from zegclip.clip import ClipSpec
    from zegclip.train.loop import Trainer

logger = logging.getLogger("jobs.train")


@dataclass
class JobConfig:
    """Resolved command line (1:1 with the flags)."""

    classes: str
    output: str
    unseen: str = ""
    data: str | None = None
    images: str | None = None
    masks: str | None = None
    image_column: str = "image"
    mask_column: str = "mask"
    min_confidence: float = 0.0
    data_format: str = "auto"
    data_classes: str | None = None
    images_from: str | None = None
    pseudo_labels: str | None = None
    pseudo_weight: float = 1.0
    init_from: str | None = None
    reduce_zero_label: bool = False
    model: str = "zegclip"
    clip_model: str = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    clip_weights: str | None = None
    num_prompt_tokens: int = 10
    decoder_ffn_dim: int = 2048
    text_embeddings: str | None = None
    zegot_layers: str = "-3,-2,-1"
    crop_size: int = 512
    scale: tuple[int, int] = (2048, 512)
    # optimisation defaults come from TrainConfig (the official recipe), defined once
    max_iters: int = TrainConfig.max_iters
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    weight_decay: float = TrainConfig.weight_decay
    lr_mult: float = TrainConfig.lr_mult
    warmup_iters: int = TrainConfig.warmup_iters
    warmup_ratio: float = TrainConfig.warmup_ratio
    min_lr: float = TrainConfig.min_lr
    power: float = TrainConfig.power
    self_train_from: int | None = None
    schedule_iters: int | None = None
    seed: int = 0
    precision: str = "bf16"
    checkpoint_every: int = 2000
    log_every: int = 50
    load_threads: int = 4
    resume: bool = False
    num_workers: int = 0
    use_gpu: bool = False


def clip_spec(job: JobConfig) -> ClipSpec:
    """The frozen CLIP of ``--clip-model`` with ``--clip-weights`` or ``--clip-pretrained``.

    As in ``jobs/label.py``: a weights file keeps the activation of the tag it stands in for
    (QuickGELU for ``openai``); ``--clip-pretrained none`` without a file = random weights.
    """
    from zegclip.labeler import LabelerSpec

    pretrained = zegclip.clip.weights_source(job.clip_pretrained)
    return LabelerSpec(
        clip_model=job.clip_model, clip_pretrained=pretrained, clip_weights=job.clip_weights
    ).clip_spec


def random_clip(job: JobConfig) -> bool:
    """True when CLIP has random weights (then checkpoints embed them)."""
    return clip_spec(job).pretrained is None


def build_zegclip_model(job: JobConfig, seen_classes: tuple[str, ...]):
    """ZegCLIP from the job flags; test-time geometry follows the training scale and crop."""
    config = zegclip.ZegCLIPConfig(
        clip=clip_spec(job),
        num_prompt_tokens=job.num_prompt_tokens,
        decoder_ffn_dim=job.decoder_ffn_dim,
        seen_classes=seen_classes,
        short_side=job.scale[1],
        crop_size=job.crop_size,
        stride=max(1, round(job.crop_size * 426 / 512)),
    )
    return zegclip.build_zegclip(config)


def build_zegot_model(job: JobConfig, seen_classes: tuple[str, ...]):
    """ZegOT from the job flags (lazy import: the module is optional for ZegCLIP runs)."""
    from zegclip.models.zegot.config import ZegOTConfig
    from zegclip.models.zegot.model import build_zegot

    names = {f.name for f in dataclasses.fields(ZegOTConfig)}
    extra = {
        "short_side": job.scale[1],
        "crop_size": job.crop_size,
        "stride": max(1, round(job.crop_size * 426 / 512)),
    }
    config = ZegOTConfig(
        clip=clip_spec(job),
        layers=tuple(int(v) for v in job.zegot_layers.split(",")),
        seen_classes=seen_classes,
        **{k: v for k, v in extra.items() if k in names},
    )
    return build_zegot(config)


# model family -> builder(job, seen_classes)
BUILDERS = {"zegclip": build_zegclip_model, "zegot": build_zegot_model}


# ----------------------------------------------------------------------------- inputs


def job_pairs(job: JobConfig) -> tuple[list, dict]:
    """The training pairs the data flags name and the ``training_data`` record of the checkpoint
    (see ``pipeline.corrections.pairs.job_pairs``)."""
    from jobs.corrections import job_pairs as load_job_pairs
    from pipeline.export.options import class_entries_from_flag
    from zegclip.weights import redact_uri

    pairs, provenance = load_job_pairs(
        classes=job.classes,
        data=job.data,
        images=job.images,
        masks=job.masks,
        image_column=job.image_column,
        mask_column=job.mask_column,
        min_confidence=job.min_confidence,
        data_format=job.data_format,
        class_entries=class_entries_from_flag(job.data_classes),
        images_from=job.images_from,
        pseudo_labels_run=job.pseudo_labels,
        pseudo_weight=job.pseudo_weight,
    )
    record = {
        "data": job.data or f"{job.images} + {job.masks}",
        "pseudo_labels": job.pseudo_labels,
        "init_from": job.init_from,
        "pairs": len(pairs),
        "provenance": provenance.as_dict() if provenance else None,
    }
    return pairs, {k: redact_uri(v) if isinstance(v, str) else v for k, v in record.items()}


def train_config(job: JobConfig) -> TrainConfig:
    """The optimisation part of the job."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in dataclasses.asdict(job).items() if k in names})


# ----------------------------------------------------------------------------- worker


def _context() -> tuple[int, int, bool]:
    """(rank, world size, inside Ray Train)."""
    try:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size(), True
    except (ImportError, RuntimeError, AttributeError):
        return 0, 1, False


def _restore(job: JobConfig, seen_classes: tuple[str, ...], tmp: str):
    """Model and training state: from the latest checkpoint when resuming, else fresh."""
    from zegclip.train.state import fetch_local, find_latest, load_training_state

    latest = find_latest(job.output) if job.resume else None
    if latest is None:
        if job.resume:
            logger.info("--resume: no checkpoint under %s, starting fresh", job.output)
        import torch

        torch.manual_seed(job.seed)  # identical random init (tiny CLIP, prompts, head) on all ranks
        if job.init_from:  # fine-tune: weights from a checkpoint, a fresh optimiser and schedule
            model = zegclip.load_model(fetch_local(job.init_from, tmp), seen_classes=seen_classes)
            return model, None
        return BUILDERS[job.model](job, seen_classes), None
    logger.info("resuming from step %d (%s)", latest["step"], latest["model"])
    model = zegclip.load_model(fetch_local(latest["model"], tmp))
    return model, load_training_state(latest["state"])


def run_worker(job_dict: dict) -> dict:
    """One worker's training loop (Ray Train's ``train_loop_per_worker``, or in-process).

    Returns:
        the last step's metrics (rank 0 also writes checkpoints and the final model).
    """
    from zegclip.text import load_text_embeddings
    from zegclip.train.augment import AugmentConfig
    from zegclip.train.data import PairSource
    from zegclip.train.loop import MaskLogits, Trainer, seen_vector
    from zegclip.train.sources import read_classes, read_unseen

    job = JobConfig(**job_dict)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rank, world, in_ray = _context()
    names = read_classes(job.classes)
    seen = seen_vector(names, read_unseen(job.unseen))
    seen_classes = tuple(n for n, s in zip(names, seen.tolist()) if s)
    pairs, training_data = job_pairs(job)
    source = PairSource(
        pairs,
        len(names),
        reduce_zero_label=job.reduce_zero_label,
        keep_provenance=True,
    )
    device = _device(job, in_ray)
    with tempfile.TemporaryDirectory() as tmp:
        model, state = _restore(job, seen_classes, tmp)
    model = model.to(device)
    learns_text = getattr(model, "learns_text_prompts", False)
    if learns_text:
        text_emb = None
    elif job.text_embeddings:
        text_emb = load_text_embeddings(job.text_embeddings, len(names)).to(device)
    else:
        text_emb = model.encode_vocabulary(names)
    forward = MaskLogits(model, names, text_emb)
    if in_ray and world > 1:
        import ray.train.torch

        # The last decoder layer's value/output/FFN weights never reach the loss (only its
        # attention logits are the mask), hence find_unused_parameters, as in the official runs.
        forward = ray.train.torch.prepare_model(
            forward,
            move_to_device=False,
            parallel_strategy_kwargs={"broadcast_buffers": False, "find_unused_parameters": True},
        )
    cfg = train_config(job)
    aug = AugmentConfig(crop_size=job.crop_size, scale=tuple(job.scale))
    trainer = Trainer(
        model,
        cfg,
        source,
        aug,
        forward,
        seen,
        device=device,
        rank=rank,
        world_size=world,
        load_threads=job.load_threads,
    )
    if state is not None:
        trainer.load_state_dict(state)
    return _loop(job, trainer, rank, in_ray, training_data)


def _device(job: JobConfig, in_ray: bool):
    import torch

    if in_ray and job.use_gpu:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda" if job.use_gpu and torch.cuda.is_available() else "cpu")


def _loop(job: JobConfig, trainer: Trainer, rank: int, in_ray: bool, training_data: dict) -> dict:
    from zegclip.train.state import save_model, save_training_checkpoint

    embed = random_clip(job)
    out: dict = {}
    while trainer.step < job.max_iters:
        out = trainer.train_one()
        done = trainer.step
        if done % job.log_every == 0 or done == job.max_iters:
            out["bad_pairs"] = float(len(trainer.source.bad))
            if rank == 0:
                logger.info(
                    "step %d %s", done, json.dumps({k: round(v, 6) for k, v in out.items()})
                )
            if in_ray:
                import ray.train

                ray.train.report(out)
        if rank == 0 and (done % job.checkpoint_every == 0 or done == job.max_iters):
            save_training_checkpoint(
                job.output,
                trainer.model,
                trainer.state_dict(),
                embed_clip=embed,
                transductive=trainer.is_transductive,
                training_data=training_data,
            )
    if rank == 0:
        save_model(
            trainer.model,
            f"{job.output.rstrip('/')}/model_final.safetensors",
            embed_clip=embed,
            transductive=trainer.is_transductive,
            training_data=training_data,
        )
    return out


# ----------------------------------------------------------------------------- driver


def run_with_ray(job: JobConfig) -> None:
    """Run ``job.num_workers`` DDP workers with Ray Train's TorchTrainer."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray.train
    from ray.train.torch import TorchTrainer

    storage = tempfile.mkdtemp(prefix="zegclip-ray-") if "://" in job.output else job.output
    trainer = TorchTrainer(
        run_worker,
        train_loop_config=dataclasses.asdict(job),
        scaling_config=ray.train.ScalingConfig(num_workers=job.num_workers, use_gpu=job.use_gpu),
        run_config=ray.train.RunConfig(
            name="ray", storage_path=os.path.abspath(storage) if "://" not in storage else storage
        ),
    )
    trainer.fit()


def write_job_config(job: JobConfig) -> None:
    """Resolved config next to the outputs (``train_config.json``)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(job.output)
    fs.makedirs(path, exist_ok=True)
    with fs.open(f"{path.rstrip('/')}/train_config.json", "w") as f:
        json.dump(dataclasses.asdict(job), f, indent=2)


def validate(job: JobConfig) -> None:
    """Fail fast on the driver: classes, split, data, model family.

    Raises:
        ValueError / FileNotFoundError: with the flag to fix.
    """
    from zegclip.train.loop import seen_vector
    from zegclip.train.sources import read_classes, read_unseen

    zegclip.check_choice(job.model, sorted(BUILDERS), "--model")
    zegclip.check_clip_model(job.clip_model)
    if job.clip_weights:
        zegclip.check_clip_source(job.clip_model, job.clip_weights, "--clip-weights")
    else:
        zegclip.check_clip_source(job.clip_model, job.clip_pretrained, "--clip-pretrained")
    zegclip.check_choice(job.precision, ("bf16", "fp16", "fp32"), "--precision")
    _check_ranges(job)
    names = read_classes(job.classes)
    seen_vector(names, read_unseen(job.unseen))
    if job.init_from:
        zegclip.check_checkpoint(job.init_from, "--init-from")
    pairs, _ = job_pairs(job)
    if len(pairs) < max(job.num_workers, 1):
        raise ValueError(f"{len(pairs)} pairs cannot feed {job.num_workers} workers")
    if job.self_train_from is not None and not 0 <= job.self_train_from < job.max_iters:
        raise ValueError("--self-train-from must lie in [0, --max-iters)")
    logger.info("%d classes, %d pairs, config %s", len(names), len(pairs), dataclasses.asdict(job))


# flag -> (lowest allowed value, whether the bound is inclusive)
_LOWER_BOUNDS = {
    "max_iters": (1, True),
    "batch_size": (1, True),
    "crop_size": (1, True),
    "num_prompt_tokens": (1, True),
    "decoder_ffn_dim": (1, True),
    "checkpoint_every": (1, True),
    "log_every": (1, True),
    "load_threads": (0, True),  # 0 = decode in the training loop
    "num_workers": (0, True),
    "warmup_iters": (0, True),
    "weight_decay": (0, True),
    "min_lr": (0, True),
    "lr": (0, False),
    "lr_mult": (0, False),
    "power": (0, False),
}


def _check_ranges(job: JobConfig) -> None:
    """Numeric flags within their ranges (NaN fails every comparison, so it is refused)."""
    for name, (low, inclusive) in _LOWER_BOUNDS.items():
        value = getattr(job, name)
        if not (value >= low if inclusive else value > low) or value == float("inf"):
            sign = ">=" if inclusive else ">"
            raise ValueError(f"--{name.replace('_', '-')} must be {sign} {low}, got {value}")
    if not 0.0 <= job.warmup_ratio <= 1.0:
        raise ValueError(f"--warmup-ratio must be within [0, 1], got {job.warmup_ratio}")


HELP = {
    "classes": "vocabulary file (zegclip.vocab format)",
    "output": "folder or URI for checkpoints",
    "unseen": "comma list or file of unseen class names",
    "data": "folder with images/ and masks/ (same stems), a Parquet file/prefix with image "
    "and mask columns, a labelling run's output (pseudo-labels; images via source_uri), or "
    "people's corrections exported by Label Studio, CVAT, COCO or mmseg (see --data-format); "
    "local or URI",
    "images": "image folder (use with --masks, e.g. CamVid's train/)",
    "masks": "mask folder, class ids in --classes order; 255 and ids >= #classes are ignored",
    "image_column": "Parquet image column (binary or Hugging Face Image struct)",
    "mask_column": "Parquet mask column",
    "min_confidence": "--data RUN or --pseudo-labels RUN: pixels whose pseudo-label confidence "
    "is below this (0..1) are ignored",
    "data_format": "what --data holds: auto (detect), labelstudio (JSON export), cvat "
    "(Segmentation mask 1.1 zip or folder), coco (JSON, RLE or polygons), mmseg (folder), "
    "pairs (a run, images/ + masks/, Parquet)",
    "data_classes": "corrections: comma list or file of NAME or NAME=NEW entries mapping the "
    "tool's class names (same rules as jobs/export.py --classes); then matched to --classes "
    "by name",
    "images_from": "corrections: the labelling run or our export the images came from; images "
    "are found by the image ids it recorded (default: --pseudo-labels, or --data itself)",
    "pseudo_labels": "with corrections in --data: also train on this run's pseudo-labels; "
    "people's labels win where both exist",
    "pseudo_weight": "loss weight (0..1) of pseudo-labelled pixels when mixing",
    "init_from": "fine-tune: start from this checkpoint's weights (fresh optimiser/schedule)",
    "reduce_zero_label": "id 0 is background: ignore it and shift the other ids down by one",
    "model": "model family: zegclip or zegot",
    "clip_model": "open_clip model name, or the path of an open_clip model config JSON",
    "clip_pretrained": "open_clip pretrained tag of --clip-model; 'none' = random weights (to try "
    "the pipeline without weights)",
    "clip_weights": "open_clip weights file, local or URI, instead of downloading "
    "--clip-pretrained (offline machines; the tag still picks the activation). Deprecated: "
    "a tag or 'none' here means --clip-pretrained",
    "num_prompt_tokens": "deep prompt tokens per layer (official: VOC 10, COCO-Stuff 100)",
    "decoder_ffn_dim": "decoder feed-forward width (official 2048)",
    "text_embeddings": "precomputed (C, D) class embeddings .npy instead of encoding --classes "
    "(as the official configs' load_text_embedding)",
    "zegot_layers": "ZegOT: ViT blocks whose patch tokens are aligned with the prompts "
    "(negative = from the end)",
    "crop_size": "training crop (official 512)",
    "scale": "LONG,SHORT of the random rescale (ratio 0.5-2.0), official 2048,512",
    "max_iters": "total iterations, both phases (official VOC 20000)",
    "batch_size": "images per worker and step (official 4 x 4 GPUs)",
    "lr": "base AdamW learning rate (prompts and decoder use lr x --lr-mult)",
    "weight_decay": "AdamW weight decay (none on LayerNorm parameters)",
    "lr_mult": "learning-rate multiplier of prompts and decoder (official 10)",
    "warmup_iters": "linear warm-up iterations",
    "warmup_ratio": "warm-up start factor",
    "min_lr": "poly schedule floor",
    "power": "poly schedule power",
    "self_train_from": "iteration where transductive self-training starts (all classes as "
    "queries, pseudo-labels on unseen-class pixels); unset = inductive only",
    "schedule_iters": "length of the inductive phase's poly schedule (default --max-iters)",
    "seed": "seed of initialisation, data order, augmentation and dropout",
    "precision": "autocast dtype on GPU: bf16, fp16 or fp32 (CPU always fp32)",
    "checkpoint_every": "iterations between checkpoints (model + optimiser/schedule/data state)",
    "log_every": "iterations between log lines",
    "load_threads": "threads decoding/augmenting (0 = in the training loop)",
    "resume": "continue exactly from the latest checkpoint under --output",
    "num_workers": "Ray Train workers (DDP); 0 = run in this process without Ray",
    "use_gpu": "one GPU per Ray Train worker",
}


def parse_args(argv: list[str] | None = None) -> JobConfig:
    """Command line -> :class:`JobConfig` (one flag per field, defaults from the dataclass)."""
    p = argparse.ArgumentParser(
        prog="jobs/train.py",
        description=__doc__.split("\n")[0],
        argument_default=argparse.SUPPRESS,
        formatter_class=JobHelpFormatter,
        epilog="Exit codes: 0 done; 2 configuration error (nothing was trained);\n"
        "1 anything else (--resume continues from the last checkpoint).",
    )
    add_dataclass_flags(p, JobConfig, HELP)
    return JobConfig(**legacy_clip_weights(vars(p.parse_args(argv))))


def legacy_clip_weights(values: dict) -> dict:
    """The old ``--clip-weights TAG`` / ``--clip-weights none`` (a tag, not a file) means
    ``--clip-pretrained TAG``, as in ``jobs/label.py``; a warning names the new spelling.

    A value with neither a ``/`` nor a ``.`` is taken for a tag (files have a path or suffix).
    """
    weights = values.get("clip_weights")
    if weights is None or "/" in weights or "." in weights:
        return values
    logger.warning(
        "--clip-weights %s is deprecated for a pretrained tag; use --clip-pretrained %s",
        weights,
        weights,
    )
    return {**values, "clip_pretrained": weights, "clip_weights": None}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    job = parse_args(argv)
    try:
        validate(job)
    except (FileNotFoundError, ValueError) as e:  # PairError, VocabularyError: ValueErrors
        logger.error("configuration error: %s", e)
        return 2
    write_job_config(job)
    if job.num_workers <= 0:
        out = run_worker(dataclasses.asdict(job))
    else:
        run_with_ray(job)
        out = {}
    print(f"training finished: {job.output} {json.dumps(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
