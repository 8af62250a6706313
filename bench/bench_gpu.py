"""Images/s at four levels, measured in one run, for the four labelling set-ups.

Levels (same device, precision and compile settings throughout):

* ``ceiling``: the bare model forward (``crop_scores`` on batches of full crops), crops/s
  divided by the windows a photo needs;
* ``predictor``: ``SegPredictor.predict`` on decoded photos (preprocessing included), and the
  pre-issue-11 host predictor (``tests/legacy_predictor.py``) beside it with ``--legacy``;
* ``actor``: decode-task resize (``pipeline.decode.prepare_batch``), then
  ``pipeline.infer.SegmentationActor`` and the CPU encode stage, in this process;
* ``job``: ``pipeline.run.run_label_job`` on a local Ray, photos repeated to ``--job-images``.

Set-ups: ZegCLIP VOC config (10 prompt tokens, 20 classes), ZegCLIP COCO-Stuff config (100
tokens, 171 classes), training-free NACLIP (PAMR on) and ZegOT; random weights (speed only).

GPU: ``python bench/bench_gpu.py`` (ViT-B-16, 64 photos, batch 64, bf16).
CPU: ``python bench/bench_gpu.py --device cpu`` (tiny test CLIP, 4 photos, legacy side by side).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import zegclip  # noqa: E402
from pipeline import decode, encode_stage  # noqa: E402
from pipeline.config import LabelJobConfig  # noqa: E402
from pipeline.infer import SegmentationActor  # noqa: E402

TINY_CLIP = str(REPO_ROOT / "tests" / "data" / "tiny-test.json")
PHOTOS = REPO_ROOT / ".." / "shared" / "data" / "camvid" / "test"
VOC = "aeroplane bicycle bird boat bottle bus car cat chair cow table dog horse motorbike person"
VOC_NAMES = VOC.split() + ["potted plant", "sheep", "sofa", "train", "tv monitor"]
SETUPS = ("zegclip-voc", "zegclip-cocostuff", "naclip", "zegot")


def build_setup(name: str, clip_model: str, workdir: Path) -> tuple[zegclip.LabelerSpec, list]:
    """The LabelerSpec (a random checkpoint written to ``workdir`` when needed) and class names."""
    clip = zegclip.ClipSpec(model=clip_model, pretrained=None)
    names = VOC_NAMES if name != "zegclip-cocostuff" else [f"stuff class {i}" for i in range(171)]
    torch.manual_seed(0)
    if name == "naclip":
        return zegclip.LabelerSpec(clip_model=clip_model, clip_pretrained=None), names
    if name == "zegot":
        from zegclip.models.zegot.config import ZegOTConfig
        from zegclip.models.zegot.model import build_zegot

        layers = (-2, -1) if clip_model == TINY_CLIP else (-3, -2, -1)  # tiny CLIP: 2 blocks
        model = build_zegot(ZegOTConfig(clip=clip, layers=layers))
    else:
        tokens = 100 if name == "zegclip-cocostuff" else 10
        model = zegclip.build_zegclip(zegclip.ZegCLIPConfig(clip=clip, num_prompt_tokens=tokens))
    path = zegclip.save_checkpoint(model, workdir / f"{name}.safetensors", embed_clip=True)
    return zegclip.LabelerSpec(checkpoint=str(path)), names


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call after one warm-up call (CUDA synchronised)."""
    fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def ceiling(predictor, photo: np.ndarray, batch: int) -> float:
    """Images/s of the bare crop forward: crops/s over the windows one photo needs."""
    scorer = predictor.scorer
    prepared = scorer.prepare(photo)
    windows = scorer.windows(*prepared.shape[:2])
    y1, y2, x1, x2 = windows[0]
    crops = torch.randn(batch, 3, y2 - y1, x2 - x1, device=predictor.device)
    with torch.inference_mode():
        seconds = timed(lambda: predictor._crop_scores(crops), 3)
    return batch / seconds / len(windows)


def per_batch(fn: Callable[[list], object], items: list, batch: int) -> float:
    """Images/s of ``fn`` over ``items`` in batches (one warm-up pass first)."""
    chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
    seconds = timed(lambda: [fn(c) for c in chunks], 1)
    return len(items) / seconds


def best_of(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Each rate measured ``repeats`` times, interleaved (shared machines drift); the best."""
    best = dict.fromkeys(fns, 0.0)
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = max(best[name], fn())
    return best


def actor_level(spec, vocab, emb, photos: list[np.ndarray], batch: int) -> float:
    """Images/s of resize (decode tasks) + actor + encode stage, serially in this process."""
    prepare = zegclip.image_preparer(spec)
    factory = functools.partial(zegclip.build_predictor, spec, vocab)
    actor = SegmentationActor(factory, emb, len(vocab), prepared=True)

    def run(chunk: list[np.ndarray]) -> None:
        raw = actor(decode.prepare_batch(decode.decoded_batch(chunk), prepare))
        encode_stage.encode_batch(raw.to_pydict(), len(vocab))

    return per_batch(run, photos, batch)


def job_level(spec, vocab, paths: list[Path], args, workdir: Path) -> float:
    """Images/s of the whole label job on a local Ray (photos repeated to ``--job-images``)."""
    from pipeline.run import init_ray, run_label_job

    src = workdir / "in"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for i in range(args.job_images):
        shutil.copy(paths[i % len(paths)], src / f"{i:06d}.jpg")
    init_ray(include_dashboard=False)
    cfg = LabelJobConfig(
        input=str(src),
        output=str(workdir / "out"),
        vocab="bench",
        class_names=tuple(vocab.names),
        batch_size=args.batch_size,
        shard_size=max(args.batch_size, 64),
        num_gpus_per_actor=args.gpus_per_actor if args.device == "cuda" else 0.0,
        concurrency=str(args.actors),
        overwrite=True,
    )
    summary = run_label_job(
        cfg,
        functools.partial(zegclip.build_predictor, spec, vocab),
        functools.partial(zegclip.encode_vocabulary_for, spec, vocab),
        zegclip.describe(spec),
        prepare_image=zegclip.image_preparer(spec),
    )
    return summary.images_per_s


def bench_setup(name: str, args, photos, paths, workdir: Path) -> dict[str, float]:
    """Every level for one set-up."""
    import dataclasses

    from legacy_predictor import LegacySegPredictor

    spec, names = build_setup(name, args.clip_model, workdir)
    spec = dataclasses.replace(
        spec, device=args.device, precision=args.precision, compile=args.compile
    )
    vocab = zegclip.Vocabulary.from_names(names)
    emb = zegclip.encode_vocabulary_for(spec, vocab, use_cache=False)
    predictor = zegclip.build_predictor(spec, vocab, emb)
    levels = {
        "ceiling": lambda: ceiling(predictor, photos[0], args.batch_size),
        "predictor": lambda: per_batch(predictor.predict, photos, args.batch_size),
    }
    if args.legacy:
        p = predictor
        legacy = LegacySegPredictor(
            p.scorer, emb, np.arange(len(names)), len(names), min_score=p.min_score,
            device=p.device, precision=p.precision, seen=p.scorer.seen_mask(names),
        )  # fmt: skip
        levels["legacy predictor"] = lambda: per_batch(legacy.predict, photos, args.batch_size)
    levels["actor"] = lambda: actor_level(spec, vocab, emb, photos, args.batch_size)
    row = best_of(levels, args.repeats)
    if args.job_images:
        row["job"] = job_level(spec, vocab, paths, args, workdir / name)
    return row


def print_table(rows: dict[str, dict[str, float]], args) -> None:
    levels = list(next(iter(rows.values())))
    print(
        f"\n{args.images} CamVid photos 480x360, {args.clip_model}, device {args.device}, "
        f"precision {args.precision}, compile {args.compile}, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}; images/s, best of {args.repeats} interleaved"
    )
    print("| set-up | " + " | ".join(levels) + " |\n|---|" + "---|" * len(levels))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.2f}" for k in levels) + " |")


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    p.add_argument("--clip-model", help="default: ViT-B-16 on cuda, the tiny test CLIP on cpu")
    p.add_argument("--images", type=int, help="photos per level (default 64 cuda, 4 cpu)")
    p.add_argument("--batch-size", type=int, help="default 64 cuda, 2 cpu")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the crop forward")
    p.add_argument("--legacy", action=argparse.BooleanOptionalAction, help="default: on cpu")
    p.add_argument("--job-images", type=int, help="0 skips the Ray job (default 2000 / 16)")
    p.add_argument("--actors", type=int, default=1, help="actor pool size of the job")
    p.add_argument("--gpus-per-actor", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a Ray actor gets 1)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per level; best")
    args = p.parse_args()
    on_gpu = args.device == "cuda"
    args.clip_model = args.clip_model or ("ViT-B-16" if on_gpu else TINY_CLIP)
    args.images = args.images or (64 if on_gpu else 4)
    args.batch_size = args.batch_size or (64 if on_gpu else 2)
    args.legacy = (not on_gpu) if args.legacy is None else args.legacy
    args.job_images = (2000 if on_gpu else 16) if args.job_images is None else args.job_images
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    paths = sorted(PHOTOS.glob("*.jpg"))[: args.images]
    if not paths:
        sys.exit(f"no photos under {PHOTOS}")
    photos = [decode.decode_image(p.read_bytes(), 10**9)[0] for p in paths]
    photos = [photos[i % len(photos)] for i in range(args.images)]
    workdir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        rows = {name: bench_setup(name, args, photos, paths, workdir) for name in args.setups}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, args)


if __name__ == "__main__":
    main()
