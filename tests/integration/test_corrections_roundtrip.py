"""Corrections round trip through the tools' own export formats (real local Ray, real photos).

A labelling run (colour predictor) -> ``jobs/select_review.py --export labelstudio|cvat`` -> masks
edited the way the tool's export carries them (Label Studio: ``annotations[].result`` brush
regions made with Label Studio's converter's encoder ``mask2rle``; CVAT: a zip in exactly the
documented "Segmentation mask 1.1" layout) -> read back by ``pipeline.corrections`` and by
``jobs/evaluate.py`` / ``jobs/train.py`` -> the corrected pixels arrive unchanged. The CVAT
leg also trains on corrections + pseudo-labels and checks that provenance reaches the next
labelling run's ``run.json``.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import CountingEncoder, colour_predictor_factory, tar_bytes
from label_studio_converter.brush import mask2rle
from ray import cloudpickle
from tiny_models import TINY_CLIP

from jobs import evaluate as evaluate_job
from jobs import label as label_job
from jobs import select_review as select_job
from jobs import train as train_job
from jobs.corrections import correction_pairs
from pipeline import encode, schema
from pipeline.config import LabelJobConfig
from pipeline.export import cvat as cvat_export
from pipeline.run import run_label_job
from zegclip.train.data import MACHINE, load_pair

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLASSES = ("red", "green", "blue")
ODD = ("we ird#name (1).jpg", "plain.jpg")


@pytest.fixture(scope="module")
def run(ray_local: None, sample_photos, tmp_path_factory) -> Path:
    """A finished labelling run over real photos, one of them a tar member named ../../x.jpg."""
    base = tmp_path_factory.mktemp("corrections")
    src = base / "input"
    src.mkdir()
    photos = sample_photos.jpegs(3)
    for name, photo in zip(ODD, photos, strict=False):
        (src / name).write_bytes(photo.read_bytes())
    (src / "evil.tar").write_bytes(tar_bytes({"../../x.jpg": photos[2].read_bytes()}))
    cfg = LabelJobConfig(
        input=str(src),
        output=str(base / "run"),
        vocab="colours.txt",
        class_names=CLASSES,
        batch_size=4,
        concurrency="1",
        num_gpus_per_actor=0,
        num_cpus_per_actor=0.5,
        shard_size=4,
    )
    run_label_job(cfg, colour_predictor_factory, CountingEncoder(), {"name": "colours"})
    return base / "run"


def _run_masks(run: Path) -> dict[str, np.ndarray]:
    tables = [pq.read_table(p) for p in sorted((run / "labels").glob("*.parquet"))]
    rows = pa.concat_tables(tables).to_pylist()
    return {r[schema.IMAGE_ID]: encode.decode_png(r[schema.MASK]["bytes"]) for r in rows}


def _edit(mask: np.ndarray, k: int) -> np.ndarray:
    """A person's correction: a box repainted, a band left unlabelled (255)."""
    out = mask.copy()
    out[5:60, 5:90] = k % len(CLASSES)
    out[100:120, :] = 255
    return out


def _select(run: Path, out: Path, tool: str) -> list[str]:
    flags = [str(run), "--budget", "3", "--strategy", "least-confident", "--output", str(out)]
    assert select_job.main([*flags, "--export", tool]) == 0
    lines = (out / "selected.jsonl").read_text().splitlines()
    return [json.loads(line)["image_id"] for line in lines]


def _ls_annotation(labels: np.ndarray) -> dict:
    h, w = labels.shape
    result = []
    for c in np.unique(labels[labels != 255]).tolist():
        rle = mask2rle(np.where(labels == c, 255, 0).astype(np.uint8))
        value = {"format": "rle", "rle": rle, "brushlabels": [CLASSES[c]]}
        result.append(
            {
                "id": f"r{c}",
                "type": "brushlabels",
                "from_name": "tag",
                "to_name": "image",
                "original_width": w,
                "original_height": h,
                "image_rotation": 0,
                "origin": "manual",
                "value": value,
            }
        )
    return {
        "id": 1,
        "completed_by": 1,
        "result": result,
        "was_cancelled": False,
        "created_at": "2026-12-01T10:00:00.000000Z",
        "updated_at": "2026-12-01T10:05:00.000000Z",
    }


def test_labelstudio_round_trip(run: Path, tmp_path: Path) -> None:
    ids = _select(run, tmp_path / "review", "labelstudio")
    tasks = json.loads((tmp_path / "review" / "labelstudio" / "tasks.json").read_text())
    assert sorted(t["data"]["image_id"] for t in tasks) == sorted(ids)
    masks, edited = _run_masks(run), {}
    for k, task in enumerate(tasks):  # what Label Studio's JSON export holds after review
        image_id = task["data"]["image_id"]
        edited[image_id] = _edit(masks[image_id], k)
        task["id"] = k + 1
        task["annotations"] = [_ls_annotation(edited[image_id])]
    evil = {"id": 99, "data": {"image_id": "../../../etc/passwd", "image": "/data/x"}}
    tasks.append({**evil, "annotations": [_ls_annotation(edited[ids[0]])]})
    export = tmp_path / "project-1-at-2026-12-01-10-06-0a1b2c3d.json"
    export.write_text(json.dumps(tasks))

    vocab = ["blue", "red", "green"]  # another order: matched by name
    pairs, prov = correction_pairs(str(export), vocab, images_from=str(tmp_path / "review/run"))
    assert (prov.corrections, prov.unmatched, prov.human_images) == (4, 1, 3)
    assert sorted(p.name for p in pairs) == sorted(ids)
    to_vocab = np.array([1, 2, 0] + [255] * 253, dtype=np.uint8)  # red, green, blue -> vocab
    for pair in pairs:
        _, labels = load_pair(pair, len(vocab))
        np.testing.assert_array_equal(labels, to_vocab[edited[pair.name]])

    # jobs/evaluate.py reads the same export as ground truth and matches the run by image id
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    report = tmp_path / "eval.json"
    flags = ["--predictions", str(run), "--data", str(export), "--classes", str(classes)]
    flags += ["--images-from", str(run), "--json", str(report)]
    assert evaluate_job.main(flags) == 0
    counts = json.loads(report.read_text())["predictions"]["counts"]
    assert counts["matched"] == 3 and counts["missing"] == 0


def _cvat_zip(path: Path, labelmap: str, masks: dict[str, np.ndarray]) -> None:
    """CVAT's "Segmentation mask 1.1" export, as documented (docs.cvat.ai format-smask)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("labelmap.txt", labelmap)
        z.writestr("ImageSets/Segmentation/default.txt", "\n".join(masks) + "\n")
        for stem, labels in masks.items():
            png = cvat_export.colour_mask(labels, len(CLASSES))
            z.writestr(f"SegmentationClass/{stem}.png", png)
            z.writestr(f"SegmentationObject/{stem}.png", png)
        z.writestr("SegmentationClass/../../../evil-0123456789ab.png", png)


def test_cvat_round_trip_train_and_provenance(run: Path, tmp_path: Path) -> None:
    ids = _select(run, tmp_path / "review", "cvat")
    annotations = tmp_path / "review" / "cvat" / "annotations"
    mapping = [json.loads(x) for x in (tmp_path / "review/cvat/image_names.jsonl").open()]
    names = {m["image_id"]: m["name"] for m in mapping}
    assert sorted(names) == sorted(ids)
    masks = _run_masks(run)
    edited = {image_id: _edit(masks[image_id], k) for k, image_id in enumerate(ids)}
    export = tmp_path / "task_12_annotations_2026_12_01_10_06_00_segmentation mask 1.1.zip"
    labelmap = (annotations / "labelmap.txt").read_text()
    _cvat_zip(export, labelmap, {names[i]: m for i, m in edited.items()})

    pairs, prov = correction_pairs(str(export), list(CLASSES), images_from=str(run))
    assert (prov.corrections, prov.unmatched) == (3, 0)
    for pair in pairs:
        np.testing.assert_array_equal(load_pair(pair, 3)[1], edited[pair.name])

    # mixed with the run's pseudo-labels, renamed and merged: people win, the rest is marked
    classes = tmp_path / "classes.txt"
    classes.write_text("blue\nwarm\n")
    spec = "red=warm,green=warm,blue"
    mixed, prov = correction_pairs(
        str(export), ["blue", "warm"], class_entries=spec.split(","), pseudo_labels_run=str(run)
    )
    assert prov.human_images == 3 and prov.machine_images == len(masks)
    lut = np.array([1, 1, 0] + [255] * 253, dtype=np.uint8)
    for pair in mixed:
        _, labels = load_pair(pair, 2, keep_provenance=True)
        machine = lut[masks[pair.name]].astype(np.uint16)
        machine[machine != 255] += MACHINE
        human = lut[edited[pair.name]] if pair.name in edited else np.full_like(machine, 255)
        np.testing.assert_array_equal(labels, np.where(human != 255, human, machine))

    out = tmp_path / "model"
    flags = ["--data", str(export), "--pseudo-labels", str(run), "--pseudo-weight", "0.5"]
    flags += ["--data-classes", spec, "--classes", str(classes), "--output", str(out)]
    flags += ["--clip-model", TINY_CLIP, "--clip-weights", "none", "--decoder-ffn-dim", "32"]
    flags += ["--crop-size", "64", "--scale", "256,64", "--max-iters", "2", "--batch-size", "2"]
    flags += ["--load-threads", "0", "--num-prompt-tokens", "2"]
    assert train_job.main(flags) == 0
    labelled = tmp_path / "next-run"
    label_flags = ["--vocab", str(classes), "--input", str(run.parent / "input" / "plain.jpg")]
    label_flags += ["--output", str(labelled), "--checkpoint", str(out / "model_final.safetensors")]
    label_flags += ["--device", "cpu", "--concurrency", "1", "--num-gpus-per-actor", "0"]
    assert label_job.main(label_flags) == 0
    data = json.loads((labelled / "run.json").read_text())["model"]["training_data"]
    assert data["provenance"]["human_images"] == 3
    assert data["provenance"]["machine_images"] == len(masks)
    assert data["provenance"]["human_pixels"] == sum(
        int((lut[m] != 255).sum()) for m in edited.values()
    )
    assert data["provenance"]["pseudo_weight"] == 0.5 and data["pairs"] == len(masks)
