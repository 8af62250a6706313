"""``jobs/export.py`` from a real labelling run (real local Ray, real photos, colour predictor).

The run's input mixes loose photos with odd names, a tar with ``../../`` and absolute member names
and a Parquet shard, so every export also proves that untrusted names never decide where it
writes. Each format is read back by its consumer library: ``datasets``, ``pycocotools`` and
``label-studio-converter`` here, Datumaro (coco, cvat), FiftyOne and mmsegmentation in their own
environments (``tests/reader_envs.py``; skipped with the install command when absent), and by an
independent reader written from the format's documentation.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import CountingEncoder, colour_predictor_factory, tar_bytes
from PIL import Image
from ray import cloudpickle
from reader_envs import reader_python, run_reader

from jobs import export as export_job
from pipeline import encode, schema, storage, write
from pipeline.config import LabelJobConfig
from pipeline.run import run_label_job

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLASSES = ("red", "green", "blue")
MODEL = {"name": "colour-threshold", "version": 1}
EVIL_MEMBERS = ("../../x.jpg", "/abs/evil.png", "a/../../b c#d.png")
ODD_LOOSE = ("we ird#name (1).jpg", "ünï cödé.png", "a.tar#b.jpg")


def _parquet(images: list[bytes]) -> bytes:
    col = pa.array([{"bytes": b, "path": None} for b in images], type=schema.IMAGE_STRUCT)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"image": col}), buf)
    return buf.getvalue().to_pybytes()


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture(scope="module")
def label_run(ray_local: None, sample_photos, tmp_path_factory) -> dict:
    """A finished local labelling run over tricky names; returns its paths and the originals."""
    base = tmp_path_factory.mktemp("export")
    src = base / "input" / "deep" / "er"  # deep, so ../../ from a member would land in base
    src.mkdir(parents=True)
    camvid = sample_photos.jpegs(4)
    voc = sample_photos.pngs(5)
    originals: dict[str, bytes] = {}
    for name, path in zip(ODD_LOOSE, [camvid[0], voc[0], camvid[1]], strict=True):
        (src / name).write_bytes(path.read_bytes())
        originals[f"deep/er/{name}"] = path.read_bytes()
    (src / "corrupt.jpg").write_bytes(b"not a jpeg")
    members = dict(zip(EVIL_MEMBERS, [camvid[2], voc[1], voc[2]], strict=True))
    (src / "evil.tar").write_bytes(tar_bytes({k: v.read_bytes() for k, v in members.items()}))
    originals.update({f"deep/er/evil.tar/{k}": v.read_bytes() for k, v in members.items()})
    (src / "rows.parquet").write_bytes(_parquet([voc[3].read_bytes(), camvid[3].read_bytes()]))
    originals["deep/er/rows.parquet/000000"] = voc[3].read_bytes()
    originals["deep/er/rows.parquet/000001"] = camvid[3].read_bytes()
    run = base / "run"
    cfg = LabelJobConfig(
        input=str(base / "input"),
        output=str(run),
        vocab="colours.txt",
        class_names=CLASSES,
        batch_size=4,
        concurrency="1",
        num_gpus_per_actor=0,
        num_cpus_per_actor=0.5,
        shard_size=4,
        max_error_rate=1.0,
    )
    run_label_job(cfg, colour_predictor_factory, CountingEncoder(), MODEL)
    return {"base": base, "run": run, "originals": originals}


def _run_masks(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """image_id -> (mask, confidence) of every ok row of the run."""
    table = pa.concat_tables([pq.read_table(p) for p in sorted((run / "labels").glob("*.parquet"))])
    out = {}
    for row in table.to_pylist():
        if row[schema.STATUS] == schema.STATUS_OK:
            mask = encode.decode_png(row[schema.MASK]["bytes"])
            conf = encode.decode_png(row[schema.CONFIDENCE]["bytes"])
            out[row[schema.IMAGE_ID]] = (mask, conf)
    return out


def _export(label_run: dict, fmt: str, out: Path, *flags: str) -> dict:
    before = _files(label_run["base"])
    code = export_job.main([str(label_run["run"]), "--format", fmt, "--out", str(out), *flags])
    assert code == 0
    new = _files(label_run["base"]) - before
    outside = [p for p in new if out.resolve() not in p.resolve().parents]
    assert not outside, f"export wrote outside --out: {outside}"
    assert not list(label_run["base"].rglob("x.jpg")) and not Path("/abs/evil.png").exists()
    mapping = [json.loads(line) for line in (out / "image_names.jsonl").read_text().splitlines()]
    return {m["image_id"]: m for m in mapping}


def _image_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _sha1(array: np.ndarray) -> str:
    """SHA-1 of a C-contiguous uint8 array, as the reader scripts hash what they read."""
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()


def test_mmseg_mixed_formats_one_suffix_lossless(label_run: dict, tmp_path: Path) -> None:
    """The run mixes JPEG and PNG inputs: every image becomes PNG, pixel for pixel."""
    out = tmp_path / "mmseg"
    mapping = _export(label_run, "mmseg", out)
    masks = _run_masks(label_run["run"])
    assert set(mapping) == set(masks) == set(label_run["originals"])
    originals = label_run["originals"]
    assert {Image.open(io.BytesIO(b)).format for b in originals.values()} == {"JPEG", "PNG"}
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["classes"] == list(CLASSES) == (out / "classes.txt").read_text().splitlines()
    assert info["img_suffix"] == ".png"
    assert sorted(p.suffix for p in (out / "img_dir" / "train").iterdir()) == [".png"] * len(masks)
    # BaseSegDataset.load_data_list: every img_dir file with img_suffix, its annotation is
    # ann_dir / (stem + seg_map_suffix). https://mmsegmentation.readthedocs.io/en/latest/
    # advanced_guides/add_datasets.html
    for img in sorted((out / "img_dir" / "train").glob(f"*{info['img_suffix']}")):
        ann = out / "ann_dir" / "train" / (img.name[: -len(".png")] + info["seg_map_suffix"])
        assert np.asarray(Image.open(ann)).dtype == np.uint8
    for image_id, record in mapping.items():
        label = np.asarray(Image.open(out / record["mask"]))
        np.testing.assert_array_equal(label, masks[image_id][0])
        stored = (out / record["image"]).read_bytes()
        original = originals[image_id]
        if Image.open(io.BytesIO(original)).format == "PNG":
            assert stored == original  # PNG inputs keep their bytes
        np.testing.assert_array_equal(_image_array(stored), _image_array(original))


@pytest.mark.slow
def test_mmseg_loads_in_mmsegmentation(label_run: dict, tmp_path: Path) -> None:
    """mmsegmentation 1.2.2's BaseSegDataset + LoadImageFromFile + LoadAnnotations (own env)."""
    reader_python("mmseg")  # skip before any work when the environment is absent
    out = tmp_path / "mmseg"
    mapping = _export(label_run, "mmseg", out, "--split", "0.5", "--min-confidence", "0.6")
    masks = _run_masks(label_run["run"])
    by_image = {m["image"]: image_id for image_id, m in mapping.items()}
    seen = []
    for split in ("train", "val"):
        got = run_reader("mmseg", "mmseg_reader.py", str(out), split)
        assert got["versions"]["mmsegmentation"] == "1.2.2" and got["classes"] == list(CLASSES)
        assert (got["ignore_index"], got["reduce_zero_label"]) == (255, False)
        for item in got["items"]:
            image_id = by_image[item["img"]]
            assert mapping[image_id]["split"] == split and item["seg"] == mapping[image_id]["mask"]
            mask, conf = masks[image_id]
            assert item["seg_sha1"] == _sha1(np.where(conf / 255.0 < 0.6, 255, mask))
            rgb = _image_array(label_run["originals"][image_id])
            assert item["image_sha1"] == _sha1(rgb[..., ::-1])  # mmcv loads BGR
            seen.append(image_id)
    assert sorted(seen) == sorted(masks)


def test_hf_dataset_loads_with_datasets(label_run: dict, tmp_path: Path, monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "hf"
    mapping = _export(label_run, "hf", out, "--split", "0.5")
    masks = _run_masks(label_run["run"])
    ds = datasets.load_dataset(str(out / "data"), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {"train", "validation"}  # 0.5 of 8 ids: both splits non-empty
    feature = ds["train"].features["classes"].feature
    assert feature.names == list(CLASSES)
    seen = set()
    for split in ds.values():
        for row in split:
            label = np.asarray(row["mask"])
            np.testing.assert_array_equal(label, masks[row["image_id"]][0])
            assert np.asarray(row["image"].convert("RGB")).shape[:2] == label.shape
            assert row["classes"] == sorted(set(np.unique(label).tolist()) - {255})
            assert mapping[row["image_id"]]["name"] == row["name"]
            seen.add(row["image_id"])
    assert seen == set(masks)


def _coco_expected(label_run: dict, mapping: dict, min_confidence: float) -> dict:
    """``images/<split>/<file>`` -> (image_id, expected mask) of a coco export."""
    masks = _run_masks(label_run["run"])
    out = {}
    for image_id, m in mapping.items():
        mask, conf = masks[image_id]
        out[m["image"]] = (image_id, np.where(conf / 255.0 < min_confidence, 255, mask))
    return out


def test_coco_rle_decodes_back_with_pycocotools(label_run: dict, tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    out = tmp_path / "coco"
    mapping = _export(label_run, "coco", out, "--min-confidence", "0.6", "--split", "0.5")
    expected = _coco_expected(label_run, mapping, 0.6)
    seen = 0
    for split in ("train", "val"):
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        coco.info()  # needs the info block
        assert coco.dataset["info"]["contributor"] and coco.dataset["licenses"] == []
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        for img in coco.loadImgs(coco.getImgIds()):
            assert "/" not in img["file_name"]  # relative to images/<split>/
            image_id, mask = expected[f"images/{split}/{img['file_name']}"]
            assert mapping[image_id]["split"] == split
            rebuilt = np.full((img["height"], img["width"]), 255, dtype=np.int64)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
                rebuilt[coco.annToMask(ann) == 1] = ann["category_id"] - 1
            np.testing.assert_array_equal(rebuilt, mask)
            stored = Image.open(out / "images" / split / img["file_name"])
            assert stored.size == (img["width"], img["height"])
            seen += 1
    assert seen == len(expected)


def test_coco_loads_in_datumaro(label_run: dict, tmp_path: Path) -> None:
    """Datumaro's ``coco`` importer (CVAT's "COCO 1.0") detects and reads the export."""
    reader_python("datumaro")  # skip before any work when the environment is absent
    out = tmp_path / "coco"
    mapping = _export(label_run, "coco", out, "--min-confidence", "0.6", "--split", "0.5")
    expected = _coco_expected(label_run, mapping, 0.6)
    got = run_reader("datumaro", "datumaro_reader.py", "coco", str(out))
    assert got["detected"] == ["coco_instances"]  # what import_from used
    assert got["labels"] == list(CLASSES)
    assert sorted(i["image"] for i in got["items"]) == sorted(expected)
    for item in got["items"]:
        image_id, mask = expected[item["image"]]
        record = mapping[image_id]
        assert (item["subset"], item["id"]) == (record["split"], record["name"])
        assert item["image_shape"] == item["mask_shape"] == list(mask.shape)
        assert item["mask_sha1"] == _sha1(mask), item["image"]


def test_options_classes_min_labelled_split(label_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "opts"
    masks = _run_masks(label_run["run"])
    flags = ["--classes", "red=warm,green=warm", "--min-labelled", "0.05", "--split", "0.5"]
    mapping = _export(label_run, "mmseg", out, *flags)
    assert (out / "classes.txt").read_text().splitlines() == ["warm"]
    skipped = [json.loads(s) for s in (out / "skipped.jsonl").read_text().splitlines()]
    for image_id, (mask, _) in masks.items():
        warm = np.isin(mask, (0, 1))
        if warm.mean() < 0.05:
            assert image_id in {s["image_id"] for s in skipped}
            continue
        record = mapping[image_id]
        label = np.asarray(Image.open(out / record["mask"]))
        np.testing.assert_array_equal(label, np.where(warm, 0, 255))
        assert record["mask"].startswith(f"ann_dir/{record['split']}/")
    assert {"corrupt.jpg" in s["image_id"] for s in skipped} >= {True}
    again = _export(label_run, "mmseg", tmp_path / "opts2", *flags)
    assert {k: v["split"] for k, v in again.items()} == {k: v["split"] for k, v in mapping.items()}


def test_rerun_skips_and_other_settings_stop(label_run: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "again"
    _export(label_run, "mmseg", out)
    first = {p: p.stat().st_mtime_ns for p in (out / "img_dir").rglob("*")}
    _export(label_run, "mmseg", out)
    assert "0 shards (" in capsys.readouterr().out.splitlines()[-1]
    assert {p: p.stat().st_mtime_ns for p in (out / "img_dir").rglob("*")} == first
    args = [str(label_run["run"]), "--format", "mmseg", "--out", str(out), "--split", "0.2"]
    assert export_job.main(args) == export_job.EXIT_CONFIG
    assert export_job.main([*args[:4], str(out), "--classes", "purple"]) == 2
    assert export_job.main([*args[:4], str(label_run["run"] / "x")]) == 2
    assert export_job.main([*args, "--overwrite"]) == 0  # other settings, folder redone
    assert json.loads((out / "export.json").read_text())["options"]["val_fraction"] == 0.2
    assert export_job.main([*args[:4], str(label_run["run"] / "labels"), "--overwrite"]) == 2
    assert list((label_run["run"] / "labels").glob("*.parquet"))
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "keep.txt").write_text("x")
    assert export_job.main([*args[:4], str(tmp_path / "precious"), "--overwrite"]) == 2
    assert (tmp_path / "precious" / "keep.txt").exists()


def test_ray_tasks_write_to_s3(label_run: dict, s3_bucket: str) -> None:
    out = f"{s3_bucket}/exports/hf"
    args = [str(label_run["run"]), "--format", "coco", "--out", out, "--ray"]
    assert export_job.main(args) == 0
    files = storage.list_files(out)
    doc = json.loads(storage.read_bytes(storage.join(out, "annotations", "instances_train.json")))
    assert len(doc["images"]) == len(_run_masks(label_run["run"]))
    assert all(storage.is_within(f, out) for f in files)
    run_shards = write.finished_parts(str(label_run["run"]))
    assert len(storage.list_files(storage.join(out, "_markers"))) == len(run_shards)


def test_names_in_output_are_safe(label_run: dict, tmp_path: Path) -> None:
    mapping = _export(label_run, "coco", tmp_path / "names")
    names = [m["name"] for m in mapping.values()]
    assert len(set(names)) == len(names)
    for name in names:
        assert name == os.path.basename(name) and not name.startswith(".")
        assert all(c.isalnum() and c.isascii() or c in "._-" for c in name)
    assert "/abs/evil.png" not in {m["name"] for m in mapping.values()}


def _read_labelmap(path: Path) -> dict[tuple[int, int, int], str]:
    """CVAT/Datumaro labelmap.txt: ``label:r,g,b:parts:actions`` lines, ``#`` comments."""
    colours = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        label, rgb, _parts, _actions = line.split(":")
        colours[tuple(int(v) for v in rgb.split(","))] = label
    return colours


def test_cvat_segmentation_mask_layout(label_run: dict, tmp_path: Path) -> None:
    # Layout and labelmap rules from https://docs.cvat.ai/docs/manual/advanced/formats/format-smask/
    # (Datumaro, CVAT's importer, cannot be installed next to our pinned opencv 5.)
    out = tmp_path / "cvat"
    mapping = _export(label_run, "cvat", out, "--split", "0.5")
    masks = _run_masks(label_run["run"])
    ann = out / "annotations"
    colours = _read_labelmap(ann / "labelmap.txt")
    assert colours[(0, 0, 0)] == "background" and sorted(colours.values())[1:] == sorted(CLASSES)
    listed = {}
    for split in ("train", "val"):
        for stem in (ann / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split():
            listed[stem] = split
    by_name = {m["name"]: image_id for image_id, m in mapping.items()}
    assert set(listed) == set(by_name)
    for stem, split in listed.items():
        image_id = by_name[stem]
        assert mapping[image_id]["split"] == split
        rgb = np.asarray(Image.open(ann / "SegmentationClass" / f"{stem}.png").convert("RGB"))
        decoded = np.full(rgb.shape[:2], 255, dtype=np.uint8)
        for colour, label in colours.items():
            if label != "background":
                decoded[(rgb == colour).all(axis=2)] = CLASSES.index(label)
        np.testing.assert_array_equal(decoded, masks[image_id][0])
        (image,) = (out / "images").glob(f"{stem}.*")
        assert Image.open(image).size == rgb.shape[1::-1]
    bad = [str(label_run["run"]), "--format", "cvat", "--out", str(tmp_path / "bad")]
    assert export_job.main([*bad, "--classes", "red=a:b"]) == export_job.EXIT_CONFIG
    assert not (tmp_path / "bad").exists()


def test_cvat_loads_in_datumaro_voc_segmentation(label_run: dict, tmp_path: Path) -> None:
    """CVAT's "Segmentation mask 1.1" import reads annotations/ with Datumaro's VOC segmentation
    reader (``voc`` of CVAT's git-only fork; ``voc_segmentation`` in Datumaro 1.x)."""
    reader_python("datumaro")  # skip before any work when the environment is absent
    out = tmp_path / "cvat"
    mapping = _export(label_run, "cvat", out, "--split", "0.5")
    masks = _run_masks(label_run["run"])
    got = run_reader("datumaro", "datumaro_reader.py", "voc_segmentation", str(out))
    assert "voc_segmentation" in got["detected"], got["detected"]
    assert set(CLASSES) <= set(got["labels"]) and "background" in got["labels"]
    by_name = {m["name"]: image_id for image_id, m in mapping.items()}
    assert sorted(i["id"] for i in got["items"]) == sorted(by_name)
    for item in got["items"]:
        image_id = by_name[item["id"]]
        assert item["subset"] == mapping[image_id]["split"]
        assert item["mask_sha1"] == _sha1(masks[image_id][0]), item["id"]


def test_labelstudio_tasks_decode_with_its_converter(label_run: dict, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from label_studio_converter.brush import decode_from_annotation

    out = tmp_path / "ls"
    hostile = '<b>&"x"'
    flags = ["--classes", f"red={hostile},green,blue"]
    mapping = _export(label_run, "labelstudio", out, *flags)
    masks = _run_masks(label_run["run"])
    config = ET.fromstring((out / "label_config.xml").read_text())  # escaped: still valid XML
    assert [e.get("value") for e in config.iter("Label")] == [hostile, "green", "blue"]
    names = [hostile, "green", "blue"]
    tasks = json.loads((out / "tasks.json").read_text())
    assert {t["data"]["image_id"] for t in tasks} == set(masks)
    for task in tasks:
        image_id = task["data"]["image_id"]
        rel = task["data"]["image"].removeprefix("/data/local-files/?d=")
        assert rel == mapping[image_id]["image"] and (out / rel).is_file()
        results = task["predictions"][0]["result"]
        # the converter reads the flattened export form: value fields next to type and size
        flat = [{**r["value"], **{k: v for k, v in r.items() if k != "value"}} for r in results]
        layers = decode_from_annotation("tag", flat)
        mask = masks[image_id][0]
        rebuilt = np.full(mask.shape, 255, dtype=np.uint8)
        for key, layer in layers.items():
            rebuilt[layer > 0] = names.index(key.removeprefix("tag-").rsplit("-", 1)[0])
        np.testing.assert_array_equal(rebuilt, mask)


def test_fiftyone_image_segmentation_directory(label_run: dict, tmp_path: Path) -> None:
    # Layout from https://docs.voxel51.com/user_guide/dataset_creation/datasets.html
    # (ImageSegmentationDirectory: data/ and labels/ matched by file stem); fiftyone itself
    # (MongoDB, hundreds of MB) is not installed.
    out = tmp_path / "fo"
    mapping = _export(label_run, "fiftyone", out)
    masks = _run_masks(label_run["run"])
    targets = json.loads((out / "mask_targets.json").read_text())
    assert {int(k): v for k, v in targets.items()} == dict(enumerate(CLASSES))
    data = {p.stem: p for p in (out / "data").iterdir()}
    labels = {p.stem: p for p in (out / "labels").iterdir()}
    assert set(data) == set(labels) == {m["name"] for m in mapping.values()}
    for image_id, record in mapping.items():
        label = np.asarray(Image.open(labels[record["name"]]))
        np.testing.assert_array_equal(label, masks[image_id][0])
        assert Image.open(data[record["name"]]).size == label.shape[::-1]


@pytest.mark.slow
def test_fiftyone_loads_in_fiftyone(label_run: dict, tmp_path: Path) -> None:
    """FiftyOne's ImageSegmentationDirectory importer, its bundled MongoDB on 127.0.0.1."""
    reader_python("fiftyone")  # skip before any work when the environment is absent
    out = tmp_path / "fo"
    mapping = _export(label_run, "fiftyone", out, "--image-format", "png")
    masks = _run_masks(label_run["run"])
    db = str(tmp_path / "fiftyone-db")
    got = run_reader(
        "fiftyone",
        "fiftyone_reader.py",
        str(out),
        FIFTYONE_DATABASE_DIR=db,
        FIFTYONE_DO_NOT_TRACK="true",
    )
    assert got["mask_targets"] == {str(i): c for i, c in enumerate(CLASSES)}
    by_image = {m["image"]: image_id for image_id, m in mapping.items()}
    assert sorted(i["image"] for i in got["items"]) == sorted(by_image)
    for item in got["items"]:
        assert item["image"].endswith(".png")  # --image-format png
        mask = masks[by_image[item["image"]]][0]
        assert item["image_shape"] == item["mask_shape"] == list(mask.shape)
        assert item["mask_sha1"] == _sha1(mask), item["image"]


def test_run_pairs_feed_training_with_min_confidence(label_run: dict, tmp_path: Path) -> None:
    from jobs import train
    from zegclip.train.data import load_pair
    from zegclip.train.run_pairs import is_run, run_pairs
    from zegclip.train.sources import load_pairs

    masks = _run_masks(label_run["run"])
    names = ["blue", "red"]  # a subset in another order: mapped by name
    assert is_run(str(label_run["run"])) and not is_run(str(tmp_path))
    pairs = run_pairs(str(label_run["run"]), names, min_confidence=0.6)
    assert [p.name for p in pairs] == sorted(masks)
    for pair in pairs:
        image, labels = load_pair(pair, len(names))
        mask, conf = masks[pair.name]
        expected = np.select([mask == 2, mask == 0], [0, 1], 255)
        expected[conf / 255.0 < 0.6] = 255
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(image, _image_array(label_run["originals"][pair.name]))
    classes = tmp_path / "classes.txt"
    classes.write_text("blue\nred\n")
    from_flags = load_pairs(data=str(label_run["run"]), classes=str(classes), min_confidence=0.6)
    assert [p.name for p in from_flags] == [p.name for p in pairs]
    assert (
        train.parse_args(
            ["--classes", "c", "--output", "o", "--min-confidence", "0.3"]
        ).min_confidence
        == 0.3
    )


def test_evaluate_predictions_min_confidence_counts_misses(label_run: dict) -> None:
    from jobs.evaluate import evaluate_predictions
    from zegclip.train.data import SegPair, encode_png

    masks = _run_masks(label_run["run"])
    loose = {k: v for k, v in masks.items() if k.rsplit("/", 1)[-1] in ODD_LOOSE}
    pairs = [
        SegPair(Path(k).stem, label_run["originals"][k], encode_png(m))
        for k, (m, _) in loose.items()
    ]
    run = str(label_run["run"])
    full, counts = evaluate_predictions(run, pairs, list(CLASSES))
    cut, _ = evaluate_predictions(run, pairs, list(CLASSES), min_confidence=0.6)
    assert counts["matched"] == len(loose) == 3
    labelled = sum(int((m != 255).sum()) for m, _ in loose.values())
    low = sum(int(((m != 255) & (c / 255.0 < 0.6)).sum()) for m, c in loose.values())
    assert np.trace(full) == full.sum() == labelled and 0 < low < labelled
    assert cut[:, len(CLASSES)].sum() == low and np.trace(cut) == labelled - low
