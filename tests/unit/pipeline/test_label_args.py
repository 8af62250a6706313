"""``jobs/label.py`` flag handling: defaults <- --config file <- command line (no Ray, no model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline.config import ConfigError, LabelJobConfig

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def label_cli():
    spec = importlib.util.spec_from_file_location("label_cli", REPO / "jobs" / "label.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flags_override_config_file(label_cli, tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "input: s3://b/in\noutput: s3://b/out\nvocab: v.txt\nbatch-size: 8\nconcurrency: '1,4'\n"
    )
    cfg = label_cli.resolve_config(
        [
            "--config",
            str(tmp_path / "c.yaml"),
            "--batch-size",
            "32",
            "--num-gpus-per-actor",
            "0.25",
            "--overwrite",
        ]
    )
    assert (cfg.batch_size, cfg.concurrency, cfg.num_gpus_per_actor) == (32, "1,4", 0.25)
    assert cfg.overwrite is True and cfg.input == "s3://b/in"
    assert cfg.clip_model == LabelJobConfig.clip_model  # untouched defaults stay


def test_missing_required_flag_is_a_config_error(label_cli) -> None:
    with pytest.raises(ConfigError, match="--vocab"):
        label_cli.resolve_config(["--input", "a", "--output", "b"])


def test_every_config_field_has_a_flag_with_help(label_cli) -> None:
    text = label_cli.build_parser().format_help()
    for flag in (
        "--num-gpus-per-actor",
        "--max-error-rate",
        "--clip-pretrained",
        "--limit",
        "--shard-size",
        "--templates",
        "--method",
        "--device",
    ):
        assert flag in text
    assert "(default: 16)" in text  # batch size default is shown
