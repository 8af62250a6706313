"""End-to-end labelling throughput vs the bare predictor on the same images, model and batch size.

For each model the same N real photos (CamVid test JPEGs, 480x360) go through

* ``forward``: ``zegclip.build_predictor(...).predict`` on pre-decoded arrays, in this process;
* ``pipeline``: ``pipeline.run.run_label_job`` on a local Ray (listing, reading, decoding, one
  actor, PNG encoding, per-shard Parquet + markers), timed from the first submitted task to
  the last written shard (Ray start-up and vocabulary encoding are reported separately).

The ratio pipeline/forward is the share of model throughput the pipeline keeps. Weights are
random (speed only). On CPU both sides use one torch thread (Ray sets OMP_NUM_THREADS=1 for an
actor with 0.5 CPU). On a GPU machine pass ``--device cuda``; the actor then gets one GPU.

Usage: ``python bench/bench_pipeline.py [--models tests/data/tiny-test.json ViT-B-16] [--images 16]
[--batch-size 4] [--threads 1] [--device cpu]``

Plumbing mode, ``--plumbing N [N ...] [--before REF]``: N small real photos (CamVid resized to
120x90) through the pipeline with a no-op predictor (``bench/plumbing_run.py``), with this tree
and, when ``--before`` is given, with the code of git ref REF, each run in a fresh process with
its own local Ray; prints images/s and the driver's peak RSS per run. With several N it also
prints the least-squares slope of this tree's driver peak RSS, in MB per 1,000 images (driver
memory flatness): ``python bench/bench_pipeline.py --plumbing 1000 5000 20000``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import zegclip  # noqa: E402
from pipeline.config import LabelJobConfig  # noqa: E402
from pipeline.decode import decode_image  # noqa: E402
from pipeline.run import init_ray, run_label_job  # noqa: E402

TINY_CLIP = str(REPO_ROOT / "tests" / "data" / "tiny-test.json")  # 2-layer test CLIP
PHOTOS = REPO_ROOT / ".." / "shared" / "data" / "camvid" / "test"
CLASSES = ["road", "car", "sky", "building", "tree", "person", "sidewalk", "sign"]


def load_photos(n: int, folder: Path) -> list[Path]:
    """The first ``n`` JPEGs of ``folder`` in name order."""
    paths = sorted(folder.glob("*.jpg"))[:n]
    if len(paths) < n:
        raise SystemExit(f"need {n} images in {folder}, found {len(paths)}")
    return paths


def forward_images_per_s(predictor, images: list[np.ndarray], batch_size: int) -> float:
    """Bare ``predict`` throughput after one warm-up batch."""
    predictor.predict(images[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        predictor.predict(images[i : i + batch_size])
    return len(images) / (time.perf_counter() - start)


def pipeline_run(spec, vocab, paths: list[Path], batch_size: int, workdir: Path) -> dict:
    """Run the labelling job on copies of ``paths``; returns its timings."""
    src = workdir / "in"
    shutil.rmtree(workdir, ignore_errors=True)
    src.mkdir(parents=True)
    for p in paths:
        shutil.copy(p, src / p.name)
    cfg = LabelJobConfig(
        input=str(src),
        output=str(workdir / "out"),
        vocab="bench",
        class_names=tuple(vocab.names),
        batch_size=batch_size,
        concurrency="1",
        shard_size=max(batch_size, 8),
        num_gpus_per_actor=1.0 if spec.device == "cuda" else 0.0,
        max_error_rate=0.0,
    )
    summary = run_label_job(
        cfg,
        functools.partial(zegclip.build_predictor, spec, vocab),
        functools.partial(zegclip.encode_vocabulary_for, spec, vocab),
        zegclip.describe(spec),
    )
    if summary.errors:
        raise RuntimeError(f"benchmark run had {summary.errors} error rows")
    return {
        "images_per_s": summary.images_per_s,
        "pipeline_s": summary.pipeline_s,
        "vocabulary_s": summary.vocabulary_s,
    }


def bench_model(name: str, args: argparse.Namespace, paths: list[Path], workdir: Path) -> dict:
    """Forward and pipeline throughput for one CLIP model name."""
    spec = zegclip.LabelerSpec(clip_model=name, clip_pretrained=None, device=args.device)
    vocab = zegclip.Vocabulary.from_names(CLASSES)
    images = [decode_image(p.read_bytes(), 10**9)[0] for p in paths]
    emb = zegclip.encode_vocabulary_for(spec, vocab)
    fwd = forward_images_per_s(zegclip.build_predictor(spec, vocab, emb), images, args.batch_size)
    pipe = pipeline_run(spec, vocab, paths, args.batch_size, workdir / Path(name).stem)
    return {"model": Path(name).stem, "forward": fwd, **pipe}


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    """Markdown table of the results."""
    print(
        f"\n{args.images} CamVid images 480x360, batch {args.batch_size}, device "
        f"{args.device}, torch threads {torch.get_num_threads()}, 1 actor\n"
    )
    print("| model | forward img/s | pipeline img/s | ratio | pipeline s | vocab s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['forward']:.2f} | {r['images_per_s']:.2f} | "
            f"{r['images_per_s'] / r['forward']:.2f} | {r['pipeline_s']:.1f} | "
            f"{r['vocabulary_s']:.1f} |"
        )


def make_small_photos(n: int, folder: Path, dest: Path) -> None:
    """Write ``n`` JPEGs (CamVid photos resized to 120x90, cycled) into ``dest``."""
    from PIL import Image

    sources = sorted(folder.glob("*.jpg"))
    dest.mkdir(parents=True)
    for i in range(n):
        photo = Image.open(sources[i % len(sources)]).convert("RGB").resize((120, 90))
        photo.save(dest / f"img{i:06d}.jpg", quality=90)


def export_tree(ref: str, dest: Path) -> Path:
    """``git archive`` of ``ref`` unpacked into ``dest`` (no worktree is touched)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def plumbing_once(tree: Path, images: Path, output: Path) -> dict:
    """One ``plumbing_run.py`` process with ``pipeline`` imported from ``tree`` (also its working
    directory: Ray workers put the driver's working directory first on their path)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "plumbing_run.py"), str(images), str(output)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"plumbing run on {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rss_slope_mb_per_1000(images: list[int], peaks_mb: list[float]) -> float:
    """Least-squares slope of driver peak RSS against the number of images, MB per 1,000."""
    return float(np.polyfit(np.asarray(images, float), np.asarray(peaks_mb, float), 1)[0] * 1000)


def bench_plumbing(args: argparse.Namespace) -> None:
    """Plumbing table for each N, then this tree's RSS slope (see module docstring)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-plumbing-"))
    try:
        make_small_photos(max(args.plumbing), args.data, workdir / "all")
        trees = {}
        if args.before:
            trees[f"before ({args.before})"] = export_tree(args.before, workdir / "before")
        trees["after (this tree)"] = REPO_ROOT
        print("\nimages 120x90 JPEG, no-op predictor, 1 actor, batch 16, shard 256, local Ray\n")
        print("| code | images | images/s | wall s | driver peak RSS MB |")
        print("|---|---|---|---|---|")
        peaks = []
        for n in args.plumbing:
            images = subset_folder(workdir / "all", workdir / f"in-{n}", n)
            for i, (name, tree) in enumerate(trees.items()):
                r = plumbing_once(tree, images, workdir / f"out-{n}-{i}")
                print(
                    f"| {name} | {r['images']} | {r['images_per_s']:.1f} | {r['seconds']:.1f} | "
                    f"{r['driver_peak_rss_mb']:.0f} |",
                    flush=True,
                )
            peaks.append(r["driver_peak_rss_mb"])  # the last tree is this one
        if len(args.plumbing) > 1:
            slope = rss_slope_mb_per_1000(args.plumbing, peaks)
            print(f"\nthis tree: driver peak RSS slope {slope:+.2f} MB per 1,000 images")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def subset_folder(source: Path, dest: Path, n: int) -> Path:
    """``dest`` holding hard links to the first ``n`` files of ``source`` (name order)."""
    dest.mkdir()
    for path in sorted(source.iterdir())[:n]:
        os.link(path, dest / path.name)
    return dest


def main() -> None:
    """Parse flags, run each model (or the plumbing comparison), print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[TINY_CLIP, "ViT-B-16"])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the forward run; Ray gives the actor (0.5 CPU) one thread",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data", type=Path, default=PHOTOS)
    parser.add_argument(
        "--plumbing", type=int, nargs="+", help="plumbing mode: numbers of small images"
    )
    parser.add_argument("--before", help="git ref of 'before' code to run beside this tree")
    args = parser.parse_args()
    if args.plumbing:
        bench_plumbing(args)
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    init_ray(include_dashboard=False)
    paths = load_photos(args.images, args.data)
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        rows = [bench_model(name, args, paths, workdir) for name in args.models]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, args)


if __name__ == "__main__":
    main()
