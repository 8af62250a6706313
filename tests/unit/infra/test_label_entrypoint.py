"""infra/label-entrypoint.sh: the environment -> jobs/label.py flags mapping, run with real bash.

The script is copied into a scratch tree next to a ``jobs/label.py`` that prints its arguments as
JSON, so the test sees exactly the argv the real job would get, without a model or a cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "infra" / "label-entrypoint.sh"
PARAMS = {
    "INPUT_PREFIX": "s3://in/images/",
    "OUTPUT_PREFIX": "s3://out/labels/",
    "VOCABULARY": "s3://in/vocab.txt",
    "CHECKPOINT": "s3://in/ckpt.safetensors",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "infra").mkdir()
    (tmp_path / "jobs").mkdir()
    shutil.copy(SCRIPT, tmp_path / "infra" / SCRIPT.name)
    (tmp_path / "jobs" / "label.py").write_text(
        "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"
    )
    bin_dir = tmp_path / "bin"  # `python` on PATH = the interpreter running the tests
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    return tmp_path


def _run(tree: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": f"{tree / 'bin'}{os.pathsep}{os.environ['PATH']}", "HOME": str(tree)}
    return subprocess.run(
        ["bash", str(tree / "infra" / SCRIPT.name), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_maps_params_to_flags_with_date_partition(tree: Path) -> None:
    env = {**PARAMS, "RUN_DATE": "2026-01-31", "EXTRA_ARGS": "--max-error-rate 0.05"}
    result = _run(tree, env, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "--input", "s3://in/images/",
        "--output", "s3://out/labels/dt=2026-01-31",
        "--vocab", "s3://in/vocab.txt",
        "--checkpoint", "s3://in/ckpt.safetensors",
        "--max-error-rate", "0.05",
        "--overwrite",
    ]  # fmt: skip


def test_default_partition_is_today_utc_and_checkpoint_optional(tree: Path) -> None:
    before = dt.datetime.now(dt.timezone.utc).date().isoformat()
    env = {**PARAMS, "CHECKPOINT": "", "CLIP_WEIGHTS": "/weights/clip.pt"}
    result = _run(tree, env)
    after = dt.datetime.now(dt.timezone.utc).date().isoformat()
    argv = json.loads(result.stdout)
    output = argv[argv.index("--output") + 1]
    assert output in (f"s3://out/labels/dt={before}", f"s3://out/labels/dt={after}")
    assert argv[-2:] == ["--clip-weights", "/weights/clip.pt"]
    assert "--checkpoint" not in argv


@pytest.mark.parametrize("missing", ["INPUT_PREFIX", "OUTPUT_PREFIX", "VOCABULARY"])
def test_missing_parameter_is_a_configuration_error(tree: Path, missing: str) -> None:
    env = {k: v for k, v in PARAMS.items() if k != missing}
    result = _run(tree, env)
    assert result.returncode == 2
    assert missing in result.stderr and result.stdout == ""


def test_malformed_run_date_is_a_configuration_error(tree: Path) -> None:
    result = _run(tree, {**PARAMS, "RUN_DATE": "$(id)"})
    assert result.returncode == 2
    assert "RUN_DATE" in result.stderr
