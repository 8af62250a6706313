"""The mask stored for image X is the predictor's output for X: image by image, end to end.

Eight distinct real photos of ONE size (4:3 crops of scikit-image's bundled photos, 160x120, so
a row/mask mix-up between images would pass every shape check) go through the label job on a
real local Ray, from a local folder and from the moto S3 server on 127.0.0.1, at several batch
and shard sizes. The job's model is built exactly as ``jobs/label.py`` builds it (its
``resolve_config`` / ``make_spec`` / ``model_callables``; tiny random CLIP). Each stored label
map and confidence map must equal what the same predictor gives for that image alone
(``predict([image])`` on the original photo, not the pipeline's prepared-image path).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import boto3
import pytest
from content import (
    alone,
    distinct,
    mismatches,
    png_bytes,
    same_size_photos,
    stored_maps,
    write_pngs,
)
from tiny_models import TINY_CLIP, save_random_clip_weights, save_tiny_zegclip_checkpoint

import zegclip
from jobs import label
from pipeline.run import run_label_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NUM_PHOTOS = 8
VOCAB = "road\ncar, automobile\nsky\nperson, pedestrian\ntree\nbuilding\n"


@pytest.fixture(scope="module")
def photos() -> dict[str, object]:
    """image id -> (120, 160, 3) uint8 photo."""
    images = same_size_photos(NUM_PHOTOS)
    return {f"img{i:03d}.png": image for i, image in enumerate(images)}


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Seeded random tiny CLIP weights as a file: the job loads them through the real
    ``--clip-weights`` path, and the test rebuilds the same predictor from the same file."""
    return str(save_random_clip_weights(tmp_path_factory.mktemp("clip") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def zegclip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random ZegCLIP checkpoint (CLIP embedded)."""
    return str(
        save_tiny_zegclip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-zegclip.safetensors")
    )


def _flags(family: str, checkpoint: str, clip_weights: str) -> list[str]:
    if family == "naclip":  # the job's default mode: training-free NACLIP
        return [
            "--clip-model",
            TINY_CLIP,
            "--clip-pretrained",
            "none",
            "--clip-weights",
            clip_weights,
        ]
    return ["--checkpoint", checkpoint, "--min-score", "0"]  # argmax everywhere: more to compare


def _label(argv: list[str]):
    """Run the job in-process on the session's Ray the way ``jobs/label.py`` does; returns the
    job's predictor built from the same spec and embeddings."""
    cfg = label.resolve_config(argv)
    vocab = label.load_vocab(cfg.vocab)
    cfg = dataclasses.replace(cfg, class_names=tuple(vocab.names))
    spec = label.make_spec(cfg)
    factory, encoder, prepare = label.model_callables(spec, vocab)
    summary = run_label_job(cfg, factory, encoder, zegclip.describe(spec), prepare_image=prepare)
    assert summary.images == NUM_PHOTOS and summary.errors == 0
    return factory(encoder())


@pytest.mark.parametrize(
    ("where", "family", "batch", "shard"),
    [
        ("local", "naclip", 1, 3),
        ("local", "zegclip", 3, 2),
        ("s3", "naclip", 4, 5),
        ("s3", "zegclip", 2, 8),
    ],
)
def test_stored_maps_are_each_images_own_prediction(
    ray_local: None,
    photos: dict,
    zegclip_checkpoint: str,
    clip_weights: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    where: str,
    family: str,
    batch: int,
    shard: int,
) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(VOCAB)
    if where == "local":
        write_pngs(list(photos.values()), tmp_path / "in")
        src, out = str(tmp_path / "in"), str(tmp_path / "out")
    else:
        bucket = request.getfixturevalue("s3_bucket")  # shared by the s3 cases (name cut)
        run = f"{family}-{batch}-{shard}"
        client = boto3.client("s3")
        for image_id, image in photos.items():
            key = f"{run}/in/{image_id}"
            client.put_object(Bucket=bucket[5:], Key=key, Body=png_bytes(image))
        src, out = f"{bucket}/{run}/in", f"{bucket}/{run}/out"
    argv = ["--vocab", str(vocab), "--input", src, "--output", out, "--device", "cpu"]
    argv += ["--batch-size", str(batch), "--shard-size", str(shard), "--concurrency", "1"]
    argv += ["--num-gpus-per-actor", "0"]
    predictor = _label(argv + _flags(family, zegclip_checkpoint, clip_weights))

    expected = alone(predictor, photos)
    assert distinct(expected), "two photos give the same maps: a swap could not show"
    assert mismatches(stored_maps(out), expected) == {}
