"""Labelling speed at every level, side by side in one run, against the model's own ceiling.

Levels (same device, precision and compile setting throughout; ``bench/gpu_levels.py``):

* ``ceiling``: the model's crop forward alone, at the predictor's crops per forward and inside
  its autocast (bf16 on CUDA by default): the most a level can reach;
* ``predictor``: ``SegPredictor.predict(prepared, sizes)`` on photos the CPU decode tasks
  already resized, as in a job;
* ``actor``: ``pipeline.infer.SegmentationActor`` on such batches: the job's model stage alone;
* ``job``: ``pipeline.run.run_label_job`` on a local Ray, timed from the first to the last
  written row; start-up (Ray, vocabulary, actor start, compile and warm-up) reported apart
  (``bench/gpu_job.py``).

Each level row gives images/s, its ratio to the ceiling, peak GPU memory (this process, reset
per level; the job: the whole GPU), GPU busy % (NVML, sampled) and host round-trips per batch
(CUDA: ``set_sync_debug_mode("warn")``; CPU: named ops, ``bench/dispatch_count.py``). With
``--counts`` (in ``--all``) it also prints ATen ops per image and round-trips per batch at
batch 1 and 32 with 64 crops per forward (the GPU setting).

Set-ups (random weights: speed only): ZegCLIP VOC config (10 prompt tokens, 20 classes),
training-free NACLIP (PAMR on, 20 classes), ZegCLIP COCO-Stuff config (100 tokens, 171 classes);
``zegot`` on request. Photos: 480x360, CamVid test photos from ``../shared/data`` when present,
else the photos bundled with scikit-image (``examples/sample_photos.py``), resized.

GPU (about 5 minutes on an H200): ``python bench/bench_gpu.py --device cuda --all``
(``bench/gpu_check.sh`` runs it on the device machine). CPU (tiny test CLIP):
``python bench/bench_gpu.py --device cpu --all``; ``--clip-model ViT-B-16`` for the real
architecture.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench")]
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["PYTHONPATH"] = os.pathsep.join(  # Ray workers import this checkout too
    filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gpu_levels import LevelResult, actor_level, ceiling, dispatch_counts, predictor_level  # noqa: E402
from PIL import Image  # noqa: E402

import zegclip  # noqa: E402
from pipeline import decode  # noqa: E402

TINY_CLIP = str(REPO_ROOT / "tests" / "data" / "tiny-test.json")
CAMVID = REPO_ROOT.parent / "shared" / "data" / "camvid" / "test"
SIZE = (480, 360)  # (W, H) of the photos: CamVid's, the issue's target
VOC = "aeroplane bicycle bird boat bottle bus car cat chair cow table dog horse motorbike person"
VOC_NAMES = VOC.split() + ["potted plant", "sheep", "sofa", "train", "tv monitor"]
SETUPS = {
    "zegclip-voc": "ZegCLIP VOC config, 10 prompt tokens, 20 classes",
    "naclip": "training-free NACLIP, PAMR on, 20 classes",
    "zegclip-cocostuff": "ZegCLIP COCO-Stuff config, 100 prompt tokens, 171 classes",
    "zegot": "ZegOT, 20 classes",
}
FAMILIES = ("zegclip-voc", "naclip", "zegclip-cocostuff")


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


def load_photos(folder: Path | None, count: int, workdir: Path) -> tuple[list[bytes], str]:
    """JPEG bytes of up to ``count`` photos at 480x360 and where they came from: ``folder``,
    else CamVid's test photos when present, else scikit-image's bundled photos (resized)."""
    folder = folder or (CAMVID if CAMVID.is_dir() else None)
    if folder is not None:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        source = str(folder.resolve())
    else:
        sys.path.insert(0, str(REPO_ROOT / "examples"))
        from sample_photos import write_sample_photos

        paths, source = write_sample_photos(workdir / "skimage"), "scikit-image bundled photos"
    if not paths:
        sys.exit(f"--photos: no .jpg or .png files in {folder}")
    out = []
    for path in paths[:count]:
        data = path.read_bytes()
        rgb = decode.decode_image(data, 10**9)[0]
        if rgb.shape[:2] != SIZE[::-1] or path.suffix.lower() != ".jpg":
            buf = io.BytesIO()
            Image.fromarray(cv2.resize(rgb, SIZE, interpolation=cv2.INTER_AREA)).save(
                buf, "JPEG", quality=90
            )
            data = buf.getvalue()
        out.append(data)
    return out, source


@dataclasses.dataclass
class SetupRun:
    """What one set-up produced: level results, in-process start-up, dispatch counts."""

    spec: zegclip.LabelerSpec
    vocab: zegclip.Vocabulary
    levels: dict[str, LevelResult]
    build_s: float
    precision: str
    counts: list = dataclasses.field(default_factory=list)


def best_of(fns: dict, repeats: int) -> dict[str, LevelResult]:
    """Each level measured ``repeats`` times, interleaved (shared machines drift); the best."""
    best: dict[str, LevelResult] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            result = fn()
            if name not in best or result.images_per_s > best[name].images_per_s:
                best[name] = result
    return best


def bench_setup(name: str, args, photos: list[np.ndarray], workdir: Path, compile: bool):
    """Ceiling, predictor and actor levels (and counts) of one set-up, in this process; its
    predictor is freed (GPU memory too, see :func:`free_memory`) once this returns."""
    spec, names = build_setup(name, args.clip_model, workdir)
    spec = dataclasses.replace(spec, device=args.device, precision=args.precision, compile=compile)
    vocab = zegclip.Vocabulary.from_names(names)
    start = time.monotonic()
    emb = zegclip.encode_vocabulary_for(spec, vocab, use_cache=False)
    predictor = zegclip.build_predictor(spec, vocab, emb)  # compiles and warms up with compile
    build_s = time.monotonic() - start
    prepare = zegclip.image_preparer(spec)
    prepared = [prepare(p) for p in photos]
    sizes = [p.shape[:2] for p in photos]
    batch, seconds = args.batch_size, args.seconds
    levels = best_of(
        {
            "ceiling": lambda: ceiling(predictor, prepared[0], seconds),
            "predictor": lambda: predictor_level(predictor, prepared, sizes, batch, seconds),
            "actor": lambda: actor_level(predictor, photos, prepare, len(names), batch, seconds),
        },
        args.repeats,
    )
    run = SetupRun(spec, vocab, levels, build_s, predictor.precision)
    if args.counts and not compile:
        n = max(args.count_batches)
        cycled = [prepared[i % len(prepared)] for i in range(n)]
        run.counts = dispatch_counts(
            predictor, cycled, [sizes[i % len(sizes)] for i in range(n)], args.count_batches,
            args.count_max_crops,
        )  # fmt: skip
    return run


def free_memory() -> None:
    """Release a finished set-up's predictor and its cached GPU memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def job_images(args, run: SetupRun) -> int:
    """``--job-images``, or on CUDA about ``--job-seconds`` of work at the actor's speed."""
    if args.job_images is not None:
        return args.job_images
    rate = run.levels["actor"].images_per_s
    batches = int(rate * args.job_seconds / args.batch_size) + 1
    return max(4, min(batches, 8192 // args.batch_size)) * args.batch_size


def run_jobs(args, runs: dict[str, SetupRun], photo_bytes, workdir: Path, deadline: float):
    """The whole job of each set-up (Ray started once); skipped past ``--budget-s``."""
    from gpu_job import run_job, start_ray

    ray_s = start_ray()
    jobs = {}
    for name, run in runs.items():
        if run.spec.compile and not args.compile:
            continue  # the extra compiled set-up: in-process levels only
        count = job_images(args, run)
        if count <= 0:
            continue
        if time.monotonic() + args.job_seconds + 60 > deadline:
            print(f"{name}: job skipped, it would pass --budget-s {args.budget_s:.0f}")
            continue
        jobs[name] = run_job(run.spec, run.vocab, photo_bytes, count, args, workdir / name)
    return ray_s, jobs


def _fmt(value, spec: str = ".1f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def print_tables(args, runs, jobs, ray_s, source: str) -> None:
    """The level table, the start-up table and (with ``--counts``) the dispatch counts."""
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()}-core CPU"
    precision = next(iter(runs.values())).precision
    print(
        f"\n{args.images} photos 480x360 ({source}), {Path(args.clip_model).stem}, {where}, "
        f"precision {precision}, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
        f"; each level >= {args.seconds:g} s, best of {args.repeats}. Host syncs: "
        + ("CUDA sync debug warnings" if args.device == "cuda" else "named ops (CPU count)")
    )
    print("\n| set-up | level | images/s | / ceiling | peak GPU MiB | GPU busy % | "
          "host syncs / batch | note |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for name, run in runs.items():
        top = run.levels["ceiling"].images_per_s
        for level, r in run.levels.items():
            print(f"| {name} | {level} | {r.images_per_s:.2f} | {r.images_per_s / top:.2f} | "
                  f"{_fmt(r.peak_mib, '.0f')} | {_fmt(r.busy_pct, '.0f')} | "
                  f"{_fmt(r.syncs_per_batch, 'd')} | {r.note} |")  # fmt: skip
        job = jobs.get(name)
        if job is not None:
            steady = job.images_per_s
            print(f"| {name} | job | {_fmt(steady, '.2f')} | {_fmt(steady and steady / top, '.2f')}"
                  f" | {_fmt(job.peak_used_mib, '.0f')} (whole GPU) | {_fmt(job.busy_pct, '.0f')} "
                  f"| n/a | {job.images} images ({job.errors} errors), {job.parts} parts, first to "
                  f"last row; {job.pipeline_images_per_s:.2f} with start-up |")  # fmt: skip
    print("\nStart-up, seconds (not in the rates above)\n\n| set-up | vocabulary + predictor "
          "build (in-process) | Ray start | job: to the first written row | of which vocabulary"
          " |\n|---|---|---|---|---|")  # fmt: skip
    for name, run in runs.items():
        job = jobs.get(name)
        first, vocab = (job.to_first_row_s, job.vocabulary_s) if job else (None, None)
        print(f"| {name} | {run.build_s:.1f} | {_fmt(ray_s if job else None)} | "
              f"{_fmt(first)} | {_fmt(vocab)} |")  # fmt: skip
    print_counts(args, runs)


def print_counts(args, runs) -> None:
    """ATen ops per image and host round-trips per batch at the ``--count-batches``."""
    counted = {name: run.counts for name, run in runs.items() if run.counts}
    if not counted:
        return
    b = args.count_batches
    cuda = args.device == "cuda"
    print(f"\nDispatch counts, {args.count_max_crops} crops per forward, after one warm-up call\n")
    head = [f"ATen ops / image, batch {n}" for n in b] + [f"batch {b[-1]} / batch {b[0]}"]
    head += [f"host syncs / batch, batch {n}" for n in b]
    head += [f"CUDA syncs / batch, batch {n}" for n in b] if cuda else []
    print("| set-up | " + " | ".join(head) + f" | syncs at batch {b[-1]} |")
    print("|---|" + "---|" * (len(head) + 1))
    for name, counts in counted.items():
        cells = [f"{c.ops_per_image:.0f}" for c in counts]
        cells.append(f"{counts[-1].ops_per_image / counts[0].ops_per_image:.2f}")
        cells += [str(c.syncs_per_batch) for c in counts]
        cells += [_fmt(c.cuda_syncs_per_batch, "d") for c in counts] if cuda else []
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts[-1].syncs_by_name.items()))
        print(f"| {name} | " + " | ".join(cells) + f" | {detail} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--all",
        action="store_true",
        help="every family, the job, dispatch counts; on CUDA also ZegCLIP VOC compiled",
    )
    p.add_argument(
        "--setups",
        nargs="+",
        choices=SETUPS,
        help="default: zegclip-voc (--all: " + ", ".join(FAMILIES) + ")",
    )
    p.add_argument("--clip-model", help="default: ViT-B-16 on cuda, the tiny test CLIP on cpu")
    p.add_argument("--photos", type=Path, help="folder of photos (default: CamVid, else skimage)")
    p.add_argument("--images", type=int, help="photos per level (default 128 cuda, 8 cpu)")
    p.add_argument("--batch-size", type=int, help="default 64 cuda, 4 cpu")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the crop forward")
    p.add_argument("--seconds", type=float, help="timed seconds per level (default 5 cuda, 2 cpu)")
    p.add_argument("--repeats", type=int, help="interleaved runs per level, best (1 cuda, 3 cpu)")
    p.add_argument(
        "--job",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the whole label job on a local Ray",
    )
    p.add_argument("--job-images", type=int, help="default: --job-seconds of work (cuda), 16 cpu")
    p.add_argument("--job-seconds", type=float, default=15.0)
    p.add_argument("--actors", type=int, default=1, help="actor pool size of the job")
    p.add_argument("--gpus-per-actor", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a Ray actor gets 1)")
    p.add_argument("--counts", action=argparse.BooleanOptionalAction, help="default: with --all")
    p.add_argument("--count-batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--count-max-crops", type=int, default=64)
    p.add_argument("--budget-s", type=float, help="skip jobs past this (default 300 cuda)")
    args = p.parse_args(argv)  # fmt: skip
    gpu = args.device == "cuda"
    if gpu and not cuda:
        p.error("--device cuda: no CUDA device is visible to PyTorch")
    args.setups = args.setups or list(FAMILIES if args.all else FAMILIES[:1])
    args.clip_model = args.clip_model or ("ViT-B-16" if gpu else TINY_CLIP)
    args.batch_size = args.batch_size or (64 if gpu else 4)
    args.images = max(args.images or (128 if gpu else 8), args.batch_size)
    args.seconds = args.seconds or (5.0 if gpu else 2.0)
    args.repeats = args.repeats or (1 if gpu else 3)
    args.job_images = args.job_images if args.job_images is not None else (None if gpu else 16)
    args.counts = args.all if args.counts is None else args.counts
    args.budget_s = args.budget_s or (300.0 if gpu else float("inf"))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    deadline = time.monotonic() + args.budget_s
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        photo_bytes, source = load_photos(args.photos, args.images, workdir)
        decoded = [decode.decode_image(b, 10**9)[0] for b in photo_bytes]
        photos = [decoded[i % len(decoded)] for i in range(args.images)]
        runs = {}
        for name in args.setups:
            runs[name] = bench_setup(name, args, photos, workdir, args.compile)
            free_memory()
        compile_too = args.all and args.device == "cuda" and not args.compile
        if compile_too and time.monotonic() + 150 < deadline:  # compiling takes a minute or two
            runs["zegclip-voc +compile"] = bench_setup("zegclip-voc", args, photos, workdir, True)
            free_memory()
        ray_s, jobs = (None, {})
        if args.job:
            ray_s, jobs = run_jobs(args, runs, photo_bytes, workdir, deadline)
        print_tables(args, runs, jobs, ray_s, source)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
