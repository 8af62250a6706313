"""``zegclip.validate``: header-only checks, and the same checks in segment / train / evaluate."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import TINY_CLIP

from jobs import evaluate as evaluate_job
from jobs import train as train_job
from zegclip.cli import main as cli_main
from zegclip.clip import ClipSpec, WeightsError, build_clip
from zegclip.io.checkpoint import FORMAT_TAG, CheckpointError
from zegclip.validate import (
    check_checkpoint,
    check_clip_model,
    check_clip_weights,
    clip_shape_problems,
)


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return build_clip(ClipSpec(model=TINY_CLIP, pretrained=None)).state_dict()


def test_our_checkpoint_passes_and_foreign_headers_fail(tiny_checkpoint: Path, tmp_path) -> None:
    check_checkpoint(str(tiny_checkpoint))
    tensors = load_file(tiny_checkpoint)
    for family, match in (("nosuch", "model family 'nosuch'"), ("zegclip", "unusable model")):
        config = {"family": family, "bogus_field": 1}
        path = tmp_path / f"{family}.safetensors"
        meta = {"format": FORMAT_TAG, "zegclip_config": json.dumps(config)}
        save_file(tensors, path, metadata=meta)
        with pytest.raises(CheckpointError, match=f"--checkpoint .*{match}"):
            check_checkpoint(str(path))


def test_clip_shapes_fit_their_model_only(tiny_state) -> None:
    shapes = {k: tuple(v.shape) for k, v in tiny_state.items()}
    tiny = check_clip_model(TINY_CLIP)
    assert clip_shape_problems(shapes, tiny) == []
    fewer = {k: v for k, v in shapes.items() if not k.startswith("visual.transformer.resblocks.1.")}
    assert clip_shape_problems(fewer, tiny) == ["1 vision layers, expected 2"]
    problems = clip_shape_problems(shapes, check_clip_model("ViT-B-16"))
    assert "visual.conv1.weight is (64, 3, 16, 16), expected (768, 3, 16, 16)" in problems
    assert "2 text layers, expected 12" in problems


def test_module_prefixed_torch_weights_are_read_without_building(tiny_state, tmp_path) -> None:
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_state.items()}}, path)
    check_clip_weights(str(path), TINY_CLIP)
    with pytest.raises(WeightsError, match=re.escape(f"--clip-weights {path}: does not fit")):
        check_clip_weights(str(path), "ViT-B-32")


def test_segment_train_and_evaluate_exit_2_naming_the_flag(tmp_path, capsys, caplog) -> None:
    vocab = tmp_path / "classes.txt"
    vocab.write_text("road\nsky\n")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    segment = ["segment", "x.jpg", "--vocab", str(vocab), "--out", str(tmp_path / "o")]
    assert cli_main([*segment, "--method", "nosuchmethod"]) == 2
    assert "--method 'nosuchmethod': choose one of" in capsys.readouterr().err
    train = ["--classes", str(vocab), "--output", str(tmp_path / "run")]
    with caplog.at_level(logging.ERROR):
        assert train_job.main([*train, "--clip-model", "NoSuchViT"]) == 2
        tiny = ["--clip-model", TINY_CLIP, "--clip-pretrained", "none"]
        assert train_job.main([*train, *tiny, "--lr", "0"]) == 2
        evaluate = ["--classes", str(vocab), "--images", str(tmp_path), "--masks", str(tmp_path)]
        assert evaluate_job.main([*evaluate, "--checkpoint", str(tmp_path / "text.pth")]) == 2
    text = caplog.text
    assert "--clip-model 'NoSuchViT': unknown CLIP model" in text
    assert "--lr must be > 0" in text
    assert f"--checkpoint {tmp_path / 'text.pth'}: not a safetensors file" in text
    assert not (tmp_path / "run").exists()  # nothing written before the checks
