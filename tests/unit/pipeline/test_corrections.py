"""Correction readers (Label Studio, CVAT, COCO, mmseg), class mapping, image lookup by recorded
ids, and mixing with pseudo-labels; every file is written as the tool's export would be."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_studio_converter.brush import mask2rle
from PIL import Image
from pycocotools import mask as mask_util

from jobs import corrections as pairs
from pipeline.corrections import coco, cvat, formats, labelstudio, mmseg
from pipeline.corrections.files import ExportFiles
from pipeline.corrections.formats import Correction
from pipeline.export import cvat as cvat_export
from pipeline.export.names import safe_name
from pipeline.export.options import OptionError
from zegclip.train.data import MACHINE, SegPair, decode_mask, load_pair

CLASSES = ["road", "car", "sky"]
RNG = np.random.default_rng(0)


def _labels(h: int = 12, w: int = 16) -> np.ndarray:
    labels = RNG.integers(0, len(CLASSES), (h, w)).astype(np.uint8)
    labels[0, :3] = 255
    return labels


def _ls_task(labels: np.ndarray, image_id: str, name: str) -> dict:
    """A task as Label Studio's JSON export carries it: people's regions in annotations."""
    h, w = labels.shape
    result = [
        {
            "type": "brushlabels",
            "from_name": "tag",
            "to_name": "image",
            "original_width": w,
            "original_height": h,
            "value": {
                "format": "rle",
                "rle": mask2rle(np.where(labels == c, 255, 0).astype(np.uint8)),
                "brushlabels": [CLASSES[c]],
            },
        }
        for c in np.unique(labels[labels != 255]).tolist()
    ]
    old = {"result": [], "was_cancelled": True, "updated_at": "2030-01-01T00:00:00Z"}
    annotation = {"result": result, "was_cancelled": False, "updated_at": "2026-01-02T00:00:00Z"}
    wrong = {"result": [], "was_cancelled": False, "updated_at": "2026-01-01T00:00:00Z"}
    return {
        "data": {"image": f"/data/local-files/?d=images/{name}.jpg", "image_id": image_id},
        "annotations": [wrong, annotation, old],
        "predictions": [{"result": [{"type": "brushlabels", "value": {"brushlabels": ["sky"]}}]}],
    }


def test_labelstudio_reads_latest_annotation_not_predictions(tmp_path: Path) -> None:
    a, b = _labels(), _labels()
    tasks = [_ls_task(a, "x/a.jpg", "a-1"), _ls_task(b, "b.jpg", "b-2")]
    tasks.append({"data": {"image_id": "c.jpg"}, "annotations": []})  # nobody annotated it
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    files = ExportFiles(str(tmp_path / "export.json"))
    assert formats.detect(files) == "labelstudio"
    found = labelstudio.read(files)
    got = {c.key: c for c in found.corrections}
    assert set(got) == {"x/a.jpg", "b.jpg"} and got["b.jpg"].by_id
    for key, want in (("x/a.jpg", a), ("b.jpg", b)):
        back = got[key].labels
        mapped = np.full_like(back, 255)
        for i, name in enumerate(found.class_names):
            mapped[back == i] = CLASSES.index(name)
        assert np.array_equal(mapped, want)


def test_labelstudio_polygon_region_is_filled(tmp_path: Path) -> None:
    task = {
        "data": {"image_id": "p.jpg"},
        "annotations": [
            {
                "result": [
                    {
                        "type": "polygonlabels",
                        "original_width": 20,
                        "original_height": 10,
                        "value": {
                            "points": [[0, 0], [50, 0], [50, 100], [0, 100]],
                            "polygonlabels": ["car"],
                        },
                    }
                ]
            }
        ],
    }
    (tmp_path / "ls.json").write_text(json.dumps([task]))
    (c,) = labelstudio.read(ExportFiles(str(tmp_path / "ls.json"))).corrections
    assert c.labels.shape == (10, 20)
    assert (c.labels[:, :9] == 0).all() and (c.labels[:, 12:] == 255).all()


def _cvat_files(root: Path, masks: dict[str, np.ndarray]) -> None:
    """CVAT "Segmentation mask 1.1" export layout (docs.cvat.ai format-smask)."""
    colours = cvat_export.colour_mask
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    from pipeline.export.palette import class_colours

    for name, colour in zip(CLASSES, class_colours(len(CLASSES)), strict=True):
        lines.append(f"{name}:{','.join(map(str, colour))}::")
    (root / "SegmentationClass").mkdir(parents=True)
    (root / "SegmentationObject").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    (root / "ImageSets" / "Segmentation" / "default.txt").write_text("\n".join(masks) + "\n")
    for stem, labels in masks.items():
        (root / "SegmentationClass" / f"{stem}.png").write_bytes(colours(labels, len(CLASSES)))
        (root / "SegmentationObject" / f"{stem}.png").write_bytes(colours(labels, len(CLASSES)))


def _zip(folder: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return out


@pytest.mark.parametrize("as_zip", [False, True])
def test_cvat_folder_and_zip(tmp_path: Path, as_zip: bool) -> None:
    masks = {"a-0123456789ab": _labels(), "b-0123456789ac": _labels()}
    _cvat_files(tmp_path / "cvat", masks)
    src = tmp_path / "cvat"
    if as_zip:
        evil = {"SegmentationClass/../../evil-0123456789ad.png": b"x", "/abs.png": b"x"}
        src = _zip(src, tmp_path / "export.zip", evil)
    files = ExportFiles(str(src))
    assert formats.detect(files) == "cvat"
    found = cvat.read(files)
    assert found.class_names == CLASSES
    got = {c.key: c.labels for c in found.corrections}
    assert set(got) == set(masks)
    for stem, want in masks.items():
        assert np.array_equal(got[stem], want)
    if as_zip:
        assert "SegmentationClass/../../evil-0123456789ad.png" in files.rejected


def test_cvat_unknown_colour_is_unlabelled_and_reported(tmp_path: Path) -> None:
    labels = _labels()
    _cvat_files(tmp_path, {"a": labels})
    rgb = np.asarray(Image.open(tmp_path / "SegmentationClass" / "a.png").convert("RGB")).copy()
    rgb[5, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / "a.png")
    found = cvat.read(ExportFiles(str(tmp_path)))
    assert found.corrections[0].labels[5, 5] == 255 and "1 pixels" in found.problems[0]


def _coco_doc(masks: dict[str, np.ndarray], polygon: bool = False) -> dict:
    images, annotations = [], []
    for i, (name, labels) in enumerate(masks.items(), start=1):
        h, w = labels.shape
        images.append({"id": i, "file_name": f"train/{name}.jpg", "height": h, "width": w})
        for c in np.unique(labels[labels != 255]).tolist():
            rle = mask_util.encode(np.asfortranarray(labels == c, dtype=np.uint8))
            seg = {"size": rle["size"], "counts": rle["counts"].decode()}
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": c + 1,
                    "segmentation": seg,
                    "iscrowd": 0,
                }
            )
    if polygon:  # a person drew a car rectangle over the top-left corner, last
        poly = [[0.0, 0.0, 4.0, 0.0, 4.0, 3.0, 0.0, 3.0]]
        annotations.append({"id": 999, "image_id": 1, "category_id": 2, "segmentation": poly})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.mark.parametrize("layout", ["ours", "standard"])
def test_coco_rle_and_polygons(tmp_path: Path, layout: str) -> None:
    masks = {"a-0123456789ab": _labels(), "b-0123456789ac": _labels()}
    name = "train.json" if layout == "ours" else "instances_default.json"
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / name).write_text(json.dumps(_coco_doc(masks, polygon=True)))
    files = ExportFiles(str(tmp_path))
    assert formats.detect(files) == "coco"
    got = {c.key: c.labels for c in coco.read(files).corrections}
    want = masks["a-0123456789ab"].copy()
    rect = mask_util.decode(
        mask_util.merge(mask_util.frPyObjects([[0.0, 0.0, 4.0, 0.0, 4.0, 3.0, 0.0, 3.0]], 12, 16))
    ).astype(bool)
    want[rect] = 1
    assert np.array_equal(got["a-0123456789ab"], want)
    assert np.array_equal(got["b-0123456789ac"], masks["b-0123456789ac"])


def test_coco_uncompressed_rle() -> None:
    labels = _labels() == 1
    counts, flat, run, current = [], labels.flatten(order="F"), 0, False
    for v in flat:
        if bool(v) != current:
            counts.append(run)
            run, current = 0, bool(v)
        run += 1
    counts.append(run)
    back = coco.decode_segmentation({"size": list(labels.shape), "counts": counts}, *labels.shape)
    assert np.array_equal(back, labels)


def test_mmseg_folder(tmp_path: Path) -> None:
    labels = _labels()
    (tmp_path / "ann_dir" / "train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "ann_dir" / "train" / "a-0123456789ab.png"), labels)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    files = ExportFiles(str(tmp_path))
    assert formats.detect(files) == "mmseg"
    (c,) = mmseg.read(files).corrections
    assert c.key == "a-0123456789ab" and np.array_equal(c.labels, labels)


def test_vocabulary_lut_renames_merges_and_ignores() -> None:
    lut = pairs.vocabulary_lut(
        ["Road", "truck", "bus", "tree"], ["Road", "truck=car", "bus=CAR"], CLASSES
    )
    assert lut[:5].tolist() == [0, 1, 1, 255, 255]
    assert pairs.vocabulary_lut(["road", "Car"], [], CLASSES)[:2].tolist() == [0, 1]
    with pytest.raises(OptionError, match="lorry"):
        pairs.vocabulary_lut(["road"], ["lorry=car"], CLASSES)


def _export_index(tmp_path: Path, ids: list[str], size=(12, 16)) -> pairs.images.ImageIndex:
    """One of our exports: image_names.jsonl and the images it names."""
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    records = []
    for image_id in ids:
        name = safe_name(image_id)
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.zeros((*size, 3), np.uint8))
        records.append(
            {
                "image_id": image_id,
                "name": name,
                "image": f"images/{name}.png",
                "height": size[0],
                "width": size[1],
            }
        )
    records.append(
        {
            "image_id": "evil",
            "name": "evil",
            "image": "../../../etc/passwd",
            "height": 1,
            "width": 1,
        }
    )
    (root / "image_names.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return pairs.open_index(str(root))


def test_images_are_found_only_through_recorded_ids(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), np.zeros((12, 16, 3), np.uint8))
    index = _export_index(tmp_path, ["a/b.jpg", "../../x.jpg"])
    assert "evil" not in index.by_id  # its image path leaves the export
    labels = _labels()
    assert index.lookup(Correction("a/b.jpg", True, labels)).image_id == "a/b.jpg"
    assert (
        index.lookup(Correction(safe_name("../../x.jpg"), False, labels)).image_id == "../../x.jpg"
    )
    for key, by_id in (
        (str(secret), True),
        ("../secret", False),
        ("secret", False),
        ("evil", False),
    ):
        assert index.lookup(Correction(key, by_id, labels)) is None
    image = index.by_id["../../x.jpg"].image
    assert Path(image).resolve().parent == (tmp_path / "export" / "images").resolve()


def test_correction_pairs_from_labelstudio_with_malicious_ids(tmp_path: Path) -> None:
    index_root = tmp_path / "export"
    _export_index(tmp_path, ["a.jpg", "b.jpg"])
    a = _labels()
    tasks = [
        _ls_task(a, "a.jpg", "a"),
        _ls_task(_labels(), "../../../etc/passwd", "passwd"),
        _ls_task(_labels(7, 7), "b.jpg", "b"),
    ]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    got, prov = pairs.correction_pairs(
        str(tmp_path / "ls.json"), CLASSES, images_from=str(index_root)
    )
    assert [p.name for p in got] == ["a.jpg"]
    assert (prov.corrections, prov.unmatched, prov.wrong_size, prov.human_images) == (3, 1, 1, 1)
    _, labels = load_pair(got[0], len(CLASSES))
    assert np.array_equal(labels, a)


def test_correction_pairs_need_an_image_index(tmp_path: Path) -> None:
    (tmp_path / "ls.json").write_text(json.dumps([_ls_task(_labels(), "a.jpg", "a")]))
    with pytest.raises(FileNotFoundError, match="--images-from"):
        pairs.correction_pairs(str(tmp_path / "ls.json"), CLASSES)
    with pytest.raises(ValueError, match="--data-format"):
        pairs.correction_format(str(tmp_path / "ls.json"), "voc")


def test_mixing_marks_machine_pixels_and_people_win() -> None:
    human = np.full((4, 4), 255, np.uint8)
    human[0] = 2
    machine = np.ones((4, 4), np.uint8)
    machine[3, 3] = 255
    prov = pairs.Provenance()
    out = pairs._mixed(human, machine, prov)
    assert out.dtype == np.uint16 and (out[0] == 2).all()
    assert (out[1:3] == 1 + MACHINE).all() and out[3, 3] == 255
    assert (prov.human_pixels, prov.machine_pixels, prov.human_images, prov.machine_images) == (
        4,
        11,
        1,
        1,
    )
    png = cv2.imencode(".png", out)[1].tobytes()
    image = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    pair = SegPair("x", image, png, provenance=True)
    _, kept = load_pair(pair, 3, keep_provenance=True)
    _, plain = load_pair(pair, 3)
    assert np.array_equal(kept, out) and plain.dtype == np.uint8
    assert np.array_equal(plain, np.where(out >= MACHINE, out - MACHINE, out))
    assert decode_mask(png).dtype == np.uint16
