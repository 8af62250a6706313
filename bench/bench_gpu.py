"""Labelling speed at every level, side by side in one run, against the model's own ceiling.

Levels (same device, precision and compile setting throughout; ``bench/gpu_levels.py``):

* ``ceiling``: the model's crop forward alone, at the predictor's crops per forward and inside
  its autocast (bf16 on CUDA by default): the most a level can reach;
* ``predictor``: ``SegPredictor.predict(prepared, sizes)`` on photos the CPU decode tasks
  already resized, as in a job;
* ``actor``, ``actor xN``: ``pipeline.infer.SegmentationActor`` on such batches: the job's model
  stage alone, its ``__call__`` from 1 thread and from N at once (``--actor-threads``, the
  job's option of that name; each thread on its own CUDA stream);
* ``job``: ``pipeline.run.run_label_job`` on a local Ray (the job's default ``--actor-threads``:
  2 on CUDA, 1 on a CPU), timed from the first to the last written row; start-up (Ray,
  vocabulary, actor start, compile and warm-up) reported apart (``bench/gpu_job.py``).

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
import contextlib
import dataclasses
import functools
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
os.environ["PYTHONPATH"] = os.pathsep.join(  # Ray workers import this checkout (and bench/)
    filter(None, [str(REPO_ROOT), str(REPO_ROOT / "bench"), os.environ.get("PYTHONPATH", "")])
)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gpu_levels import LevelResult, actor_level, ceiling, dispatch_counts, predictor_level  # noqa: E402
from gpu_report import print_level_rows, print_tables  # noqa: E402
from PIL import Image  # noqa: E402

import zegclip  # noqa: E402
from pipeline import decode  # noqa: E402

TINY_CLIP = str(REPO_ROOT / "tests" / "data" / "tiny-test.json")
CAMVID = REPO_ROOT.parent / "shared" / "data" / "camvid" / "test"
SIZE = (480, 360)  # (W, H) of the photos: CamVid's, the target
VOC = "aeroplane bicycle bird boat bottle bus car cat chair cow table dog horse motorbike person"
VOC_NAMES = VOC.split() + ["potted plant", "sheep", "sofa", "train", "tv monitor"]
SETUPS = {
    "zegclip-voc": "ZegCLIP VOC config, 10 prompt tokens, 20 classes",
    "naclip": "training-free NACLIP, PAMR on, 20 classes",
    "zegclip-cocostuff": "ZegCLIP COCO-Stuff config, 100 prompt tokens, 171 classes",
    "zegot": "ZegOT, 20 classes",
}
FAMILIES = ("zegclip-voc", "naclip", "zegclip-cocostuff")
COMPILED = "zegclip-voc +compile"


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
    prepare = predictor.scorer.prepare  # = zegclip.image_preparer(spec), without a rebuild
    prepared = [prepare(p) for p in photos]
    sizes = [p.shape[:2] for p in photos]
    batch, seconds = args.batch_size, args.seconds
    fns = {
        "ceiling": lambda: ceiling(predictor, prepared[0], seconds),
        "predictor": lambda: predictor_level(predictor, prepared, sizes, batch, seconds),
    }
    for n in args.actor_threads:
        fns["actor" if n == 1 else f"actor x{n}"] = functools.partial(
            actor_level, predictor, photos, prepare, len(names), batch, seconds, threads=n
        )
    levels = best_of(fns, args.repeats)
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
    rate = max(r.images_per_s for k, r in run.levels.items() if k.startswith("actor"))
    batches = int(rate * args.job_seconds / args.batch_size) + 1
    return max(4, min(batches, 8192 // args.batch_size)) * args.batch_size


class Budget:
    """``--budget-s`` from the start: optional steps (jobs, the compiled set-up) that would
    pass it are skipped, with a line saying so."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def allows(self, what: str, estimate_s: float) -> bool:
        if time.monotonic() + estimate_s <= self.deadline:
            return True
        print(f"{what}: skipped, it would pass --budget-s {self.seconds:.0f}", flush=True)
        return False


def run_job_for(name: str, run: SetupRun, args, photo_bytes, workdir: Path, budget: Budget):
    """The whole job of one set-up on the running local Ray, or None when skipped."""
    from gpu_job import run_job

    count = job_images(args, run)
    if count <= 0 or not budget.allows(f"{name} job", args.job_seconds + 60):
        return None
    job = run_job(run.spec, run.vocab, photo_bytes, count, args, workdir / name)
    print_level_rows(name, run, job)
    return job


def compiled_setup(args, photos, workdir: Path, budget: Budget, runs: dict) -> None:
    """With ``--all`` on CUDA (and no ``--compile``): ZegCLIP VOC's levels compiled, so that
    one run says whether ``--compile`` wins; added to ``runs`` as ``zegclip-voc +compile``."""
    if not (args.all and args.device == "cuda" and not args.compile):
        return
    if budget.allows(COMPILED, 150):  # compiling the forward takes a minute or two
        runs[COMPILED] = bench_setup("zegclip-voc", args, photos, workdir, True)
        free_memory()
        print_level_rows(COMPILED, runs[COMPILED])


@contextlib.contextmanager
def ray_session(enabled: bool):
    """Yields the seconds a local Ray took to start (None when ``enabled`` is False); shuts
    it down (and its agents) at the end. Ray is imported only here."""
    if not enabled:
        yield None
        return
    from gpu_job import start_ray

    from pipeline.local_ray import shutdown_on_signals

    with shutdown_on_signals():
        yield start_ray()


def describe_run(args, source: str, precision: str) -> str:
    """One line: photos, model, machine, settings."""
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()}-core CPU"
    syncs = "CUDA sync debug warnings" if args.device == "cuda" else "named ops (CPU count)"
    return (
        f"{args.images} photos 480x360 ({source}), {Path(args.clip_model).stem}, {where}, "
        f"precision {precision}, compile {args.compile}, batch {args.batch_size}, torch threads "
        f"{torch.get_num_threads()}; each level >= {args.seconds:g} s, best of {args.repeats}; "
        f"host syncs: {syncs}"
    )


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
    p.add_argument("--seconds", type=float, help="timed seconds per level (default 3 cuda, 2 cpu)")
    p.add_argument("--repeats", type=int, help="interleaved runs per level, best (1 cuda, 3 cpu)")
    p.add_argument(
        "--job",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the whole label job on a local Ray",
    )
    p.add_argument("--job-images", type=int, help="default: --job-seconds of work (cuda), 16 cpu")
    p.add_argument(
        "--job-seconds", type=float, default=10.0, help="cuda: job size, see --job-images"
    )
    p.add_argument("--actors", type=int, default=1, help="actor pool size of the job")
    p.add_argument("--gpus-per-actor", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a Ray actor gets 1)")
    p.add_argument(
        "--actor-threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="actor level rows: its __call__ from this many threads at once, one row each",
    )
    p.add_argument("--counts", action=argparse.BooleanOptionalAction, help="default: with --all")
    p.add_argument("--count-batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--count-max-crops", type=int, default=64)
    p.add_argument(
        "--budget-s",
        type=float,
        help="skip set-ups, jobs, compiling past this (default 330 s cuda)",
    )
    args = p.parse_args(argv)  # fmt: skip
    gpu = args.device == "cuda"
    if gpu and not cuda:
        p.error("--device cuda: no CUDA device is visible to PyTorch")
    args.setups = args.setups or list(FAMILIES if args.all else FAMILIES[:1])
    args.clip_model = args.clip_model or ("ViT-B-16" if gpu else TINY_CLIP)
    args.batch_size = args.batch_size or (64 if gpu else 4)
    args.images = max(args.images or (128 if gpu else 8), args.batch_size)
    args.seconds = args.seconds or (3.0 if gpu else 2.0)
    args.repeats = args.repeats or (1 if gpu else 3)
    args.job_images = args.job_images if args.job_images is not None else (None if gpu else 16)
    args.counts = args.all if args.counts is None else args.counts
    args.budget_s = args.budget_s or (330.0 if gpu else float("inf"))
    if min(args.actor_threads) < 1:
        p.error("--actor-threads: thread counts must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        photo_bytes, source = load_photos(args.photos, args.images, workdir)
        decoded = [decode.decode_image(b, 10**9)[0] for b in photo_bytes]
        photos = [decoded[i % len(decoded)] for i in range(args.images)]
        runs: dict[str, SetupRun] = {}
        for i, name in enumerate(args.setups):
            if i and not budget.allows(name, 40):
                continue
            runs[name] = bench_setup(name, args, photos, workdir, args.compile)
            free_memory()
            print_level_rows(name, runs[name])
        jobs = {}
        # The first set-up's job, then the compiled set-up (CUDA, --all), then the other jobs.
        steps = [*args.setups[:1], COMPILED, *args.setups[1:]]
        with ray_session(args.job) as ray_s:
            for step in steps:
                if step not in runs and step != COMPILED:
                    continue
                if step == COMPILED:
                    compiled_setup(args, photos, workdir, budget, runs)
                elif args.job:
                    jobs[step] = run_job_for(step, runs[step], args, photo_bytes, workdir, budget)
        header = describe_run(args, source, next(iter(runs.values())).precision)
        print_tables(header, runs, {k: v for k, v in jobs.items() if v}, ray_s, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
