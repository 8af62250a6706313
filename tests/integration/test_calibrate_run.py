"""``jobs/evaluate.py --calibrate`` on a real labelled run: real CamVid photos labelled by the
colour-threshold predictor (local Ray), evaluated against CamVid's ground-truth masks."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import CountingEncoder, colour_predictor_factory
from PIL import Image
from ray import cloudpickle

from jobs import evaluate
from pipeline.config import LabelJobConfig, config_from_mapping, load_config_file
from pipeline.run import run_label_job

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# The colour predictor labels red-, green- and blue-dominant pixels with classes 0, 1, 2.
CLASSES = ("road", "tree", "sky")


@pytest.fixture(scope="module")
def camvid_run(ray_local: None, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("calib")
    camvid = data_root / "camvid"
    (root / "in").mkdir()
    for p in sorted((camvid / "test").glob("*.jpg"))[:6]:
        shutil.copy(p, root / "in" / p.name)
    cfg = LabelJobConfig(
        input=str(root / "in"),
        output=str(root / "out"),
        vocab="v.txt",
        class_names=CLASSES,
        batch_size=3,
        num_gpus_per_actor=0,
        shard_size=3,
    )
    run_label_job(cfg, colour_predictor_factory, CountingEncoder(), {"name": "colour"})
    return {"root": root, "run": cfg.output, "camvid": camvid}


def _evaluate(run: dict, target: float, name: str) -> tuple[int, dict, Path]:
    out = run["root"] / name
    camvid = run["camvid"]
    code = evaluate.main(
        [
            *("--predictions", run["run"], "--classes", str(camvid / "classes.txt")),
            *("--images", str(camvid / "test"), "--masks", str(camvid / "testannot")),
            *("--calibrate", "--target-precision", str(target), "--threshold-step", "0.05"),
            *("--calibration-out", str(out), "--json", str(out / "metrics.json")),
        ]
    )
    return code, json.loads((out / "metrics.json").read_text()), out


def test_calibration_on_a_real_labelled_run(camvid_run: dict) -> None:
    code, report, out = _evaluate(camvid_run, 0.9, "cal-0.9")
    counts = report["predictions"]["counts"]
    assert counts["matched"] == 6 and counts["errors"] == 0
    pixels = counts["pixels"]
    sweep = report["calibration"]["sweep"]
    assert len(sweep) == 21 and sweep[0]["threshold"] == 0.0
    labelled = pixels["correct"] + pixels["wrong"]
    assert sweep[0]["precision"] == pytest.approx(pixels["correct"] / labelled, abs=1e-6)
    total = labelled + pixels["unlabelled"]
    assert sweep[0]["coverage"] == pytest.approx(labelled / total, abs=1e-6)
    coverage = [r["coverage"] for r in sweep]
    assert all(a >= b for a, b in zip(coverage, coverage[1:]))
    reach = [r["threshold"] for r in sweep if (r["precision"] or 0) >= 0.9]
    assert report["calibration"]["recommended_min_score"] == (reach[0] if reach else None)
    assert code == (0 if reach else 1)
    assert (out / "label-config.json").exists() == bool(reach)
    assert Image.open(out / "calibration.png").size[0] > 0

    best = max(r["precision"] for r in sweep if r["precision"] is not None)
    target = float(np.floor(best * 1000) / 1000)
    code, report, out = _evaluate(camvid_run, target, "cal-best")
    chosen = report["calibration"]["recommended_min_score"]
    first = next(r for r in sweep if (r["precision"] or 0) >= target)
    assert code == 0 and chosen == first["threshold"]
    values = load_config_file(str(out / "label-config.json"))
    cfg = config_from_mapping({**values, "input": "in", "output": "out", "vocab": "v.txt"})
    assert cfg.min_score == chosen
