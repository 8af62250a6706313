"""Third-party readers (Datumaro, FiftyOne, mmsegmentation) run in their own environments.

Their pins clash with ours (opencv < 5, their own numpy/torch stacks), so each lives in a virtual
environment made by ``tests/readers/install.sh NAME`` under ``$READER_VENVS`` (default
``.venvs/`` in the repository). A test runs a reader script from ``tests/readers/`` there as a
subprocess on an export and compares the JSON it prints with what the run holds; without the
environment the test skips and names the install command.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
READERS = REPO_ROOT / "tests" / "readers"


def venvs_dir() -> Path:
    """Folder holding the reader environments."""
    return Path(os.environ.get("READER_VENVS") or REPO_ROOT / ".venvs")


def reader_python(name: str) -> Path:
    """The Python of environment ``name``; skips (naming the install command) when absent."""
    env = venvs_dir() / name
    if not (env / "complete").is_file():
        pytest.skip(
            f"the {name} reader environment is not installed: run "
            f"`bash tests/readers/install.sh {name}` (into $READER_VENVS or .venvs/; "
            f"packages in tests/readers/{name}.txt)"
        )
    return env / "bin" / "python"


def run_reader(name: str, script: str, *args: str, timeout: float = 600, **env: str) -> dict:
    """Run ``tests/readers/<script>`` with ``args`` in environment ``name``; its JSON output.

    Args:
        env: extra environment variables (e.g. a database folder); the rest of ours is passed on
            except PYTHONPATH, so the reader imports only its environment's packages.
    """
    python = reader_python(name)
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(python), str(READERS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environ, **env},
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])
