"""SegPredictor semantics (min_score, synonyms, background, dtype); the CLI on real photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import zegclip
from zegclip.cli import main as cli_main
from zegclip.models.scorer import DenseScorer
from zegclip.predictor import BACKGROUND, SegPredictor, ignore_index_for


class FixedScorer(DenseScorer):
    """A DenseScorer whose crop scores are given per row: isolates the predictor's logic."""

    def __init__(self, row_scores: list[np.ndarray]):
        super().__init__()
        self.rows = torch.tensor(np.stack(row_scores), dtype=torch.float32)  # (S, H, W)

    def encode_vocabulary(self, names, templates=None):
        raise NotImplementedError("rows are given")

    def preprocess(self, image):
        return torch.zeros(1, 3, *image.shape[:2])

    def windows(self, height, width):
        return [(0, height, 0, width)]

    def crop_scores(self, crops, text_emb, seen):
        return self.rows[None].expand(crops.shape[0], -1, -1, -1)


def _ramp(h=4, w=5):
    return np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)


def test_min_score_maps_low_confidence_pixels_to_255():
    ramp = _ramp()
    scorer = FixedScorer([ramp, np.full_like(ramp, 0.3)])
    pred = SegPredictor(scorer, np.zeros((2, 4)), np.array([0, 1]), 2, min_score=0.4)
    out = pred.predict([np.zeros((4, 5, 3), np.uint8)])[0]
    expected = np.where(ramp > 0.3, 0, 1).astype(np.uint8)
    expected[np.maximum(ramp, 0.3) < 0.4] = 255
    assert np.array_equal(out.label_map, expected)
    assert out.class_counts.tolist() == [int((expected == 0).sum()), int((expected == 1).sum())]
    assert out.class_counts.sum() == (out.label_map != 255).sum()


def test_synonyms_take_the_max_and_background_rows_unlabel():
    a, b = _ramp(), 1 - _ramp()
    scorer = FixedScorer([a * 0.5, b, np.full_like(a, 0.45), a])  # class0 has rows 0 and 3
    index = np.array([0, 1, BACKGROUND, 0])
    out = SegPredictor(scorer, np.zeros((4, 4)), index, 2).predict([np.zeros((4, 5, 3), np.uint8)])
    best = np.stack([np.maximum(a * 0.5, a), b, np.full_like(a, 0.45)]).argmax(0)
    expected = np.where(best == 2, 255, best).astype(np.uint8)
    assert np.array_equal(out[0].label_map, expected)
    expected_conf = np.rint(np.maximum(np.maximum(a, b), 0.45) * 255)  # uint8 quantisation
    assert np.abs(out[0].confidence.astype(int) - expected_conf).max() <= 1


def test_more_than_255_classes_use_uint16_with_65535_unlabelled():
    assert ignore_index_for(255) == 255 and ignore_index_for(256) == 65535
    rows = [np.full((4, 5), 0.1, np.float32)] * 299 + [_ramp()]
    out = SegPredictor(FixedScorer(rows), np.zeros((300, 4)), np.arange(300), 300, min_score=0.5)
    pred = out.predict([np.zeros((4, 5, 3), np.uint8)])[0]
    assert pred.label_map.dtype == np.uint16
    assert set(np.unique(pred.label_map)) == {299, 65535}


def test_zegclip_min_score_default_and_override(tiny_checkpoint):
    vocab = zegclip.Vocabulary.from_names(["car", ("road", "street"), "sky"])
    spec = zegclip.LabelerSpec(checkpoint=str(tiny_checkpoint))
    emb = zegclip.encode_vocabulary_for(spec, vocab)
    assert emb.shape == (4, 64)
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    default = zegclip.build_predictor(spec, vocab, emb)
    assert default.min_score == 0.5
    strict = zegclip.build_predictor(
        zegclip.LabelerSpec(checkpoint=str(tiny_checkpoint), min_score=1.0), vocab, emb
    )
    assert (strict.predict([image])[0].label_map == 255).all()


def _real_photos(sample_photos, n=2):
    return sample_photos.pngs(n) + sample_photos.jpegs(n)


def test_real_photos_through_the_predictor(tiny_checkpoint, sample_photos):
    vocab = zegclip.Vocabulary.from_names(["car", "road", "sky", "person", "building"])
    spec = zegclip.LabelerSpec(checkpoint=str(tiny_checkpoint), min_score=0.0)
    predictor = zegclip.build_predictor(spec, vocab, zegclip.encode_vocabulary_for(spec, vocab))
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in _real_photos(sample_photos)]
    for image, pred in zip(photos, predictor.predict(photos), strict=True):
        assert pred.label_map.shape == image.shape[:2] and pred.label_map.dtype == np.uint8
        assert pred.label_map.max() < 5
        assert pred.class_counts.sum() == image.shape[0] * image.shape[1]
        assert pred.confidence.dtype == np.uint8 and pred.confidence.shape == image.shape[:2]


def test_cli_segment_writes_index_overlay_and_stats(tiny_checkpoint, sample_photos, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("# street\ncar, automobile\nroad\nsky\n")
    photos = _real_photos(sample_photos, n=1)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    code = cli_main(
        [
            "segment",
            *map(str, photos),
            str(bad),
            "--vocab",
            str(vocab),
            "--out",
            str(tmp_path / "out"),
            "--checkpoint",
            str(tiny_checkpoint),
            "--min-score",
            "0.45",
        ]
    )
    assert code == 1  # one input failed, the others were written
    for photo in photos:
        size = Image.open(photo).size
        index = Image.open(tmp_path / "out" / f"{photo.stem}.png")
        overlay = Image.open(tmp_path / "out" / f"{photo.stem}_overlay.png")
        stats = json.loads((tmp_path / "out" / f"{photo.stem}.json").read_text())
        labels = np.asarray(index)
        assert index.size == size and overlay.size == size and overlay.mode == "RGB"
        assert set(np.unique(labels)) <= {0, 1, 2, 255}
        counted = sum(c["pixels"] for c in stats["classes"])
        assert counted + stats["unlabelled_pixels"] == labels.size
        assert stats["unlabelled_pixels"] == int((labels == 255).sum())
        assert {c["name"] for c in stats["classes"]} <= {"car", "road", "sky"}


def test_cli_reports_configuration_errors_with_exit_2(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("car\ncar\n")
    code = cli_main(
        [
            "segment",
            "x.jpg",
            "--vocab",
            str(vocab),
            "--out",
            str(tmp_path),
            "--checkpoint",
            str(tmp_path / "missing.safetensors"),
        ]
    )
    assert code == 2 and "already appears on line 1" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--checkpoint", "--clip-weights"])
def test_missing_weights_fail_before_work_naming_the_flag(tmp_path, flag):
    kwargs = {"checkpoint": None, "clip_weights": None}
    kwargs[flag.lstrip("-").replace("-", "_")] = str(tmp_path / "nope.bin")
    with pytest.raises(FileNotFoundError, match=flag):
        zegclip.check_spec(zegclip.LabelerSpec(**kwargs))


def test_precision_auto_is_bf16_on_cuda_and_fp32_on_cpu():
    from zegclip.labeler import resolve_precision

    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp16", torch.device("cuda")) == "fp16"
    with pytest.raises(ValueError, match="--precision"):
        zegclip.check_spec(zegclip.LabelerSpec(precision="fp8"))


def test_output_names_never_collide_and_stay_inside_the_output():
    from pathlib import Path

    from zegclip.cli import output_stems

    paths = [Path(p) for p in ("d1/a.jpg", "d1/a.png", "d2/a.png", "b.jpg", "..png", "...")]
    stems = output_stems(paths)
    assert stems == ["a_jpg", "a_png_2", "a_png_3", "b", "png", "image"]


def test_cli_segment_keeps_both_outputs_of_same_stem_inputs(
    tiny_checkpoint, sample_photos, tmp_path
):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("car\nroad\nsky\n")
    photo = _real_photos(sample_photos, n=1)[0]
    image = np.asarray(Image.open(photo).convert("RGB"))
    Image.fromarray(image).save(tmp_path / "x.png")
    Image.fromarray(np.ascontiguousarray(image[:, ::-1])).save(tmp_path / "x.bmp")
    args = ["segment", str(tmp_path / "x.png"), str(tmp_path / "x.bmp"), "--vocab", str(vocab)]
    code = cli_main([*args, "--out", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)])
    assert code == 0
    png = np.asarray(Image.open(tmp_path / "out" / "x_png.png"))
    bmp = np.asarray(Image.open(tmp_path / "out" / "x_bmp.png"))
    assert png.shape == bmp.shape == image.shape[:2]
    assert not (tmp_path / "out" / "x.png").exists()
