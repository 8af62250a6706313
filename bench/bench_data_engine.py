"""The data engine measured on CamVid: people correct a chosen few, the model learns, relabels.

Loop (every step through the project's own jobs):

1. teacher: the tiny model trained on ``--teacher-pairs`` CamVid ground-truth pairs;
2. the labelling pipeline (real local Ray) pre-labels a pool of other training photos;
3. ``jobs/select_review.py`` chooses ``--budget`` images per round with each strategy and
   exports them to CVAT ("Segmentation mask 1.1");
4. the "people": the CamVid ground truth of the chosen images is written into that export's
   ``SegmentationClass/`` PNGs (CVAT's documented layout), accumulated over rounds;
5. ``jobs/train.py --data <corrections> --pseudo-labels <pool run> --init-from <model>``
   fine-tunes on corrections plus the pool's pseudo-labels (people's labels win);
6. the fine-tuned model relabels the pool (next round) and is scored on held-out CamVid test
   photos (mIoU over the 11 classes, argmax, no threshold).

Prints the table (strategy x round -> test mIoU, corrected images), writes a JSON of the numbers
and a plot (mIoU versus corrected images per strategy). Tiny models on CPU: the numbers show
whether the loop works, not what a real model reaches. Usage::

    python bench/bench_data_engine.py --plot docs/images/data-engine.png --json data-engine.json
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import zegclip  # noqa: E402
from jobs import select_review as select_job  # noqa: E402
from jobs import train as train_job  # noqa: E402
from pipeline.config import LabelJobConfig  # noqa: E402
from pipeline.export import cvat  # noqa: E402
from pipeline.export.names import safe_name  # noqa: E402
from pipeline.run import run_label_job  # noqa: E402
from zegclip.train.data import PairError, load_pair  # noqa: E402
from zegclip.train.metrics import compute_metrics, confusion_matrix  # noqa: E402
from zegclip.train.sources import load_pairs  # noqa: E402
from zegclip.vocab import IGNORE_INDEX  # noqa: E402

CAMVID = REPO.parent / "shared" / "data" / "camvid"
TINY_CLIP = str(REPO / "tests" / "data" / "tiny-test.json")
STRATEGIES = ("least-confident", "class-balanced", "diverse", "random")
logger = logging.getLogger("bench.data_engine")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--camvid", default=str(CAMVID), help="CamVid root (train/, trainannot/, ...)")
    p.add_argument("--work", default="/tmp/bench-data-engine", help="scratch folder (emptied)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma list")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--budget", type=int, default=8, help="images corrected per round")
    p.add_argument("--teacher-pairs", type=int, default=8)
    p.add_argument("--pool", type=int, default=48, help="unlabelled training photos")
    p.add_argument("--test", type=int, default=24, help="held-out CamVid test photos")
    p.add_argument("--teacher-iters", type=int, default=300)
    p.add_argument("--finetune-iters", type=int, default=150)
    p.add_argument("--pseudo-weight", type=float, default=0.5)
    p.add_argument("--size", type=int, default=180, help="photos are downscaled to this height")
    p.add_argument("--crop", type=int, default=128, help="training crop and test-time short side")
    p.add_argument("--seed", type=int, default=0, help="random strategy's seed")
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--plot", help="write the plot (PNG) here")
    return p.parse_args(argv)


class FixedEmbeddings:
    """Vocabulary encoder returning precomputed (C, D) class embeddings (the tiny CLIP's random
    text tower maps class names to nearly parallel vectors; see tests/test_train_camvid.py)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> np.ndarray:
        return np.load(self.path).astype(np.float32)


@functools.cache
def _classes(camvid: str) -> tuple[str, list[str]]:
    path = str(Path(camvid) / "classes.txt")
    return path, zegclip.load_vocabulary(path).names


def _link(files: list[Path], folder: Path) -> str:
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    return str(folder)


def _shrunk(files: list[Path], folder: Path, height: int, labels: bool = False) -> str:
    """Copies of ``files`` downscaled to ``height`` (area for photos, nearest for labels), PNG."""
    import cv2

    folder.mkdir(parents=True)
    for f in files:
        image = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        width = round(image.shape[1] * height / image.shape[0])
        mode = cv2.INTER_NEAREST if labels else cv2.INTER_AREA
        cv2.imwrite(
            str(folder / f"{f.stem}.png"), cv2.resize(image, (width, height), interpolation=mode)
        )
    return str(folder)


def train(out: Path, ctx: dict, iters: int, *data: str) -> Path:
    """``jobs/train.py`` with the tiny model; returns the final checkpoint."""
    crop, emb = ctx["crop"], ctx["emb"]
    flags = [*data, "--classes", ctx["classes"], "--output", str(out), "--clip-model", TINY_CLIP]
    flags += ["--clip-weights", "none", "--decoder-ffn-dim", "128", "--crop-size", str(crop)]
    flags += ["--scale", f"{crop * 4},{crop}", "--warmup-iters", "20", "--lr", "2e-4"]
    flags += ["--batch-size", "4"]
    flags += ["--max-iters", str(iters), "--log-every", "50", "--checkpoint-every", str(iters)]
    flags += ["--load-threads", "2", "--text-embeddings", emb]
    if train_job.main(flags) != 0:
        raise RuntimeError(f"training failed: {flags}")
    return out / "model_final.safetensors"


def label(checkpoint: Path, images: str, output: Path, emb: str, classes: str) -> str:
    """The labelling pipeline (local Ray) over ``images``; returns the run folder."""
    spec = zegclip.LabelerSpec(checkpoint=str(checkpoint), device="cpu", min_score=0.0)
    vocab = zegclip.load_vocabulary(classes)
    cfg = LabelJobConfig(
        input=images,
        output=str(output),
        vocab=classes,
        class_names=tuple(vocab.names),
        batch_size=4,
        concurrency="1",
        num_gpus_per_actor=0,
        num_cpus_per_actor=1,
        shard_size=16,
        device="cpu",
    )
    factory = functools.partial(zegclip.build_predictor, spec, vocab)
    run_label_job(cfg, factory, FixedEmbeddings(emb), zegclip.describe(spec))
    return str(output)


def test_miou(checkpoint: Path, pairs: list, emb: str, num_classes: int) -> float:
    """mIoU (argmax, all classes) of a checkpoint on ground-truth pairs, fixed embeddings."""
    model = zegclip.load_model(checkpoint)
    predictor = zegclip.SegPredictor(
        model, np.load(emb), np.arange(num_classes), num_classes, min_score=None
    )
    conf = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for pair in pairs:
        try:
            image, gt = load_pair(pair, num_classes)
        except PairError:
            continue
        conf += confusion_matrix(gt, predictor.predict([image])[0].label_map, num_classes)
    return float(compute_metrics(conf, np.ones(num_classes, dtype=bool)).miou_seen)


def correct(selection_dir: Path, corrections: Path, gt_dir: Path, num_classes: int) -> int:
    """Play the people: write the ground truth of the chosen images as CVAT
    ``SegmentationClass`` PNGs (named as the export named them) into ``corrections``."""
    export = selection_dir / "cvat" / "annotations"
    (corrections / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    shutil.copy(export / "labelmap.txt", corrections / "labelmap.txt")
    for line in (selection_dir / "selected.jsonl").read_text().splitlines():
        image_id = json.loads(line)["image_id"]
        mask = _gt_mask(gt_dir, image_id, num_classes)
        png = cvat.colour_mask(mask, num_classes)
        (corrections / "SegmentationClass" / f"{safe_name(image_id)}.png").write_bytes(png)
    return len(list((corrections / "SegmentationClass").glob("*.png")))


def _gt_mask(gt_dir: Path, image_id: str, num_classes: int) -> np.ndarray:
    import cv2

    mask = cv2.imread(str(gt_dir / f"{Path(image_id).stem}.png"), cv2.IMREAD_UNCHANGED)
    assert mask is not None, image_id
    return np.where(mask < num_classes, mask, IGNORE_INDEX).astype(np.uint8)


def selected_before(folder: Path) -> list[str]:
    """``--exclude`` flags for every earlier round's ``selected.jsonl``."""
    return [f for p in sorted(folder.glob("sel-*/selected.jsonl")) for f in ("--exclude", str(p))]


def run_strategy(args, strategy: str, ctx: dict) -> list[dict]:
    """Rounds of one strategy from the teacher; one result row per round."""
    work = Path(args.work) / strategy
    corrections = work / "corrections"
    model, run, rows = ctx["teacher"], ctx["pool_run"], []
    for r in range(1, args.rounds + 1):
        sel = work / f"sel-{r}"
        flags = [run, "--budget", str(args.budget), "--strategy", strategy, "--output", str(sel)]
        flags += ["--export", "cvat", "--seed", str(args.seed), *selected_before(work)]
        assert select_job.main(flags) == 0
        corrected = correct(sel, corrections, ctx["gt_dir"], ctx["num_classes"])
        start = time.monotonic()
        data = ["--data", str(corrections), "--pseudo-labels", run, "--init-from", str(model)]
        data += ["--pseudo-weight", str(args.pseudo_weight)]
        model = train(work / f"model-{r}", ctx, args.finetune_iters, *data)
        miou = test_miou(model, ctx["test_pairs"], ctx["emb"], ctx["num_classes"])
        rows.append({"strategy": strategy, "round": r, "corrected": corrected, "miou": miou})
        logger.info(
            "%s round %d: %d corrected, mIoU %.4f (%.0f s)",
            strategy,
            r,
            corrected,
            miou,
            time.monotonic() - start,
        )
        if r < args.rounds:
            run = label(model, ctx["pool"], work / f"run-{r}", ctx["emb"], ctx["classes"])
    return rows


def _annot(camvid: Path, folder: str, images: list[Path]) -> list[Path]:
    return [camvid / folder / f"{p.stem}.png" for p in images]


def setup(args) -> dict:
    """Teacher, pool run, test pairs."""
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    camvid = Path(args.camvid)
    classes, names = _classes(str(camvid))
    train_images = sorted((camvid / "train").glob("*.*"))
    used = train_images[: args.teacher_pairs + args.pool]
    all_images = Path(_shrunk(used, work / "train", args.size))
    gt_dir = Path(_shrunk(_annot(camvid, "trainannot", used), work / "gt", args.size, True))
    teacher_images = [all_images / f"{p.stem}.png" for p in used[: args.teacher_pairs]]
    pool = [all_images / f"{p.stem}.png" for p in used[args.teacher_pairs :]]
    test = sorted((camvid / "test").glob("*.*"))[: args.test]
    test_pairs = load_pairs(
        images=_shrunk(test, work / "test-img", args.size),
        masks=_shrunk(_annot(camvid, "testannot", test), work / "test-gt", args.size, True),
    )
    emb = str(work / "emb.npy")
    rng = np.random.default_rng(0)
    np.save(emb, rng.standard_normal((len(names), 64)).astype(np.float32))
    ctx = {"classes": classes, "num_classes": len(names), "emb": emb, "test_pairs": test_pairs}
    ctx["gt_dir"], ctx["crop"] = gt_dir, args.crop
    ctx["pool"] = _link(pool, work / "pool")
    teacher_data = ["--images", _link(teacher_images, work / "t-img")]
    teacher_data += ["--masks", _link([gt_dir / p.name for p in teacher_images], work / "t-gt")]
    ctx["teacher"] = train(work / "teacher", ctx, args.teacher_iters, *teacher_data)
    ctx["teacher_miou"] = test_miou(ctx["teacher"], test_pairs, emb, len(names))
    ctx["pool_run"] = label(ctx["teacher"], ctx["pool"], work / "pool-run", emb, classes)
    return ctx


def table(rows: list[dict], teacher: float) -> str:
    """Markdown table: strategy x round -> mIoU (corrected images)."""
    rounds = sorted({r["round"] for r in rows})
    lines = ["| strategy | " + " | ".join(f"round {r}" for r in rounds) + " |"]
    lines.append("| --- |" + " --- |" * len(rounds))
    lines.append(f"| teacher (0 corrected) | {teacher:.3f} |" + " |" * (len(rounds) - 1))
    for s in dict.fromkeys(r["strategy"] for r in rows):
        cells = [f"{r['miou']:.3f} ({r['corrected']})" for r in rows if r["strategy"] == s]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path: str, rows: list[dict], teacher: float) -> None:
    """mIoU versus corrected images, one line per strategy, from the teacher's point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for s in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == s]
        xs = [0] + [r["corrected"] for r in mine]
        ax.plot(xs, [teacher] + [r["miou"] for r in mine], marker="o", label=s)
    ax.set_xlabel("corrected images")
    ax.set_ylabel("test mIoU (CamVid, 11 classes)")
    ax.set_title("data engine, tiny model on CPU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def run_loop(args: argparse.Namespace) -> dict:
    """Teacher, then every strategy's rounds: ``{"teacher": mIoU, "rows": [...]}``."""
    ctx = setup(args)
    rows = []
    for strategy in args.strategies.split(","):
        rows += run_strategy(args, strategy, ctx)
    return {"teacher": ctx["teacher_miou"], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from pipeline.run import init_ray

    start = time.monotonic()
    for attempt in range(3):  # a loaded machine can miss Ray's fixed 30 s node start-up wait
        try:
            init_ray(num_cpus=2)
            break
        except Exception:  # noqa: BLE001 - Ray raises a bare Exception here
            if attempt == 2:
                raise
            import ray

            ray.shutdown()
    result = run_loop(args)
    print(table(result["rows"], result["teacher"]))
    print(f"total {time.monotonic() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "args": vars(args)}, indent=2))
    if args.plot:
        plot(args.plot, result["rows"], result["teacher"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
