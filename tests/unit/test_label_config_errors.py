"""Every flag of ``jobs/label.py`` with a wrong value: exit 2, the flag named, no traceback, no Ray.

The flag list comes from the job's own parser, so a new flag without a wrong-value entry in
``WRONG`` fails :func:`test_wrong_value_exits_2_before_ray`. Most cases run ``main(argv)`` in this
process (the model package imports once); :func:`test_real_command_exits_2_without_starting_ray`
runs the real command for the three mistakes that used to start Ray first.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from tiny_models import TINY_CLIP

REPO = Path(__file__).resolve().parents[2]
LABEL = REPO / "jobs" / "label.py"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


label_job = _load("label_job_under_test", LABEL)

# flag -> wrong values; "{name}" is a path from the ``files`` fixture. Each case must make the
# job exit 2 with a message that names the flag.
WRONG: dict[str, list[list[str]]] = {
    "--config": [["--config", "{missing}.yaml"], ["--config", "{unparsable_config}"]],
    "--input": [["--input", "{missing}"], ["--input", "{empty_dir}"]],
    "--output": [["--output", "{input}/out"], ["--output", "{vocab}/out"]],  # under a file
    "--vocab": [["--vocab", "{missing}"], ["--vocab", "{duplicate_vocab}"]],
    "--batch-size": [["--batch-size", "0"], ["--config", "{typed_config}"]],
    "--concurrency": [["--concurrency", "3,1"], ["--concurrency", "two"]],
    "--num-gpus-per-actor": [["--num-gpus-per-actor", "-1"], ["--num-gpus-per-actor", "inf"]],
    "--num-cpus-per-actor": [["--num-cpus-per-actor", "0"], ["--num-cpus-per-actor", "nan"]],
    "--actor-threads": [["--actor-threads", "0"], ["--actor-threads", "-2"]],
    "--shard-size": [["--shard-size", "0"]],
    "--image-column": [
        ["--image-column", "img"],
        ["--image-column", "img", "--input", "{parquet_dir}"],
    ],
    "--max-image-pixels": [["--max-image-pixels", "0"]],
    "--min-score": [["--min-score", "1.5"], ["--min-score", "nan"]],
    "--templates": [["--templates", "nosuchset"], ["--templates", "{no_placeholder}"]],
    "--background": [["--background", "sky"], ["--background", "wall,Wall"]],
    "--overwrite": [["--overwrite=yes"]],
    "--review": [["--review", "s3://bucket/report"]],  # the report folder must be local
    "--dashboard": [["--dashboard=yes"]],
    "--compile": [["--compile=yes"]],
    "--retry-errors": [["--retry-errors=yes"]],
    "--include": [["--include", "*.nothing"]],  # leaves no input
    "--exclude": [["--exclude", "*"]],
    "--max-error-rate": [["--max-error-rate", "1.5"]],
    "--limit": [["--limit", "0"]],
    "--checkpoint": [
        ["--checkpoint", "{missing}.safetensors"],
        ["--checkpoint", "{text_safetensors}"],
        ["--checkpoint", "{text_pth}"],
        ["--checkpoint", "{clip_weights}"],  # safetensors, but not one of our checkpoints
        ["--checkpoint", "{clip_weights_pt}"],  # torch file, but not the authors' keys
    ],
    "--clip-model": [
        ["--clip-model", "NoSuchViT"],
        ["--clip-model", "RN50"],  # known to open_clip, not a ViT
        ["--clip-model", "{missing}.json"],
    ],
    "--clip-pretrained": [["--clip-pretrained", "laion_typo"]],
    "--clip-weights": [
        ["--clip-weights", "{missing}.pt"],
        ["--clip-weights", "{text_pth}"],
        ["--clip-weights", "{clip_weights}", "--clip-model", "ViT-B-16"],  # shapes of tiny
    ],
    "--method": [["--method", "nosuchmethod"]],
    "--device": [["--device", "tpu"]],
    "--precision": [["--precision", "fp8"]],
    "--pamr-precision": [["--pamr-precision", "bf16"]],
    "--if-busy": [["--if-busy", "skip"]],
    "--wait-timeout": [["--wait-timeout", "-1"], ["--wait-timeout", "inf"]],
    "--lease-ttl": [["--lease-ttl", "0.5"], ["--lease-ttl", "nan"]],
}


def parser_flags() -> list[str]:
    """Every long option of the job's parser except ``--help``."""
    actions = label_job.build_parser()._actions
    return sorted(
        o for a in actions for o in a.option_strings if o.startswith("--") and o != "--help"
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Valid inputs for the baseline command, and broken files for the wrong values."""
    root = tmp_path_factory.mktemp("flags")
    paths = {name: root / name for name in ("input", "empty_dir", "parquet_dir")}
    for folder in paths.values():
        folder.mkdir()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(paths["input"] / "a.png")
    table = pa.table({"image": [(paths["input"] / "a.png").read_bytes()]})
    pq.write_table(table, paths["parquet_dir"] / "part-0.parquet")
    texts = {
        "vocab": ("vocab.txt", "road\nsky, heaven\n"),
        "duplicate_vocab": ("duplicate_vocab.txt", "cat\nCat\n"),
        "unparsable_config": ("unparsable.yaml", "input: [unclosed\n"),
        "typed_config": ("typed.yaml", "batch-size: sixteen\n"),
        "no_placeholder": ("templates.txt", "a photo of a thing\n"),
        "text_safetensors": ("text.safetensors", "not weights\n"),
        "text_pth": ("text.pth", "not weights\n"),
    }
    out = {k: str(v) for k, v in paths.items()}
    for key, (name, text) in texts.items():
        (root / name).write_text(text)
        out[key] = str(root / name)
    out.update(_tiny_clip_weights(root))
    out.update(missing=str(root / "missing"), output=str(root / "out"))
    return out


def _tiny_clip_weights(root: Path) -> dict[str, str]:
    import torch
    from safetensors.torch import save_file

    from zegclip.clip import ClipSpec, build_clip

    state = build_clip(ClipSpec(model=TINY_CLIP, pretrained=None)).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, root / "clip.safetensors")
    torch.save(state, root / "clip.pt")
    return {
        "clip_weights": str(root / "clip.safetensors"),
        "clip_weights_pt": str(root / "clip.pt"),
    }


def valid_argv(files: dict[str, str]) -> list[str]:
    """A command that passes every check (the tiny CLIP with random weights)."""
    return [
        "--input",
        files["input"],
        "--output",
        files["output"],
        "--vocab",
        files["vocab"],
        "--clip-model",
        TINY_CLIP,
        "--clip-pretrained",
        "none",
        "--device",
        "cpu",
    ]


def run_in_process(argv: list[str], capsys, caplog, monkeypatch) -> tuple[int, str]:
    """``main(argv)`` here; the exit code and everything it wrote to stderr and the log."""

    def refuse_ray() -> None:
        raise AssertionError("Ray was started for a configuration mistake")

    monkeypatch.setattr(label_job, "_init_local_ray", refuse_ray)
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        try:
            code = label_job.main(argv)
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
    assert all(r.exc_info is None for r in caplog.records), "a traceback was logged"
    return code, capsys.readouterr().err + caplog.text


def test_valid_baseline_passes_every_check(files) -> None:
    cfg, _, _, model = label_job._prepare(valid_argv(files))
    assert len(label_job.plan_job(cfg, model).shards) == 1
    weights = ["--clip-weights", files["clip_weights"], "--clip-pretrained", "openai"]
    label_job._prepare(valid_argv(files) + weights)  # weights that fit the tiny model


@pytest.mark.parametrize("flag", parser_flags())
def test_wrong_value_exits_2_before_ray(flag, files, capsys, caplog, monkeypatch, tmp_path) -> None:
    assert flag in WRONG, f"{flag} has no wrong-value case in WRONG; add one"
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    for case in WRONG[flag]:
        argv = valid_argv(files) + [arg.format(**files) for arg in case]
        start = time.monotonic()
        code, text = run_in_process(argv, capsys, caplog, monkeypatch)
        assert code == 2, f"{case}: exit {code}\n{text}"
        assert flag in text, f"{case}: message does not name {flag}:\n{text}"
        assert "Traceback" not in text
        assert time.monotonic() - start < 5, f"{case} took {time.monotonic() - start:.1f} s"
    assert not list(tmp_path.rglob("session_*"))


def test_every_wrong_value_names_a_flag_of_the_parser() -> None:
    assert set(WRONG) <= set(parser_flags())  # no stale entries


SUBPROCESS_CASES = {
    "--method": ["--method", "nosuchmethod"],
    "--clip-model": ["--clip-model", "NoSuchViT", "--clip-weights", "{clip_weights}"],
    "--checkpoint": ["--checkpoint", "{text_pth}"],
}


@pytest.mark.parametrize("flag", sorted(SUBPROCESS_CASES))
def test_real_command_exits_2_without_starting_ray(flag, files, tmp_path) -> None:
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    args = valid_argv(files) + [a.format(**files) for a in SUBPROCESS_CASES[flag]]
    done = subprocess.run(
        [sys.executable, str(LABEL), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert flag in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("session_*"))  # Ray writes its session folder here first


def test_offline_without_cached_weights_stops_before_ray_with_advice(
    files, capsys, caplog, monkeypatch, tmp_path
) -> None:
    """The README demo offline: one line naming --clip-weights and the random-weights run."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # empty caches: nothing downloaded before
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    argv = valid_argv(files) + ["--clip-model", "ViT-B-16", "--clip-pretrained", "openai"]
    start = time.monotonic()
    code, text = run_in_process(argv, capsys, caplog, monkeypatch)  # fails if Ray starts
    assert code == 2 and time.monotonic() - start < 5, text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Traceback" not in text
    assert "--clip-pretrained openai" in errors[0] and "--clip-weights PATH_OR_URI" in errors[0]
    assert "--clip-pretrained none --min-score 0" in errors[0]
