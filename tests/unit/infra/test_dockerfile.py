"""infra/Dockerfile: parsed and checked against constraints.txt and pyproject.toml.

Docker does not run on the development machines, so the image is never built in tests; these
checks catch the drift that would otherwise only show on the cluster (driver and workers on
different Ray/torch versions, a root user, credentials baked in, files missing from the context).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs; joins continuation lines, drops comments."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "dangling line continuation"
    return instructions


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt must pin exactly: {line}"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)


def test_parser_handles_continuations_and_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM a:1\nRUN x \\\n    && y\n\nUSER 1000\n")
    assert parsed == [("FROM", "a:1"), ("RUN", "x && y"), ("USER", "1000")]


def test_base_image_matches_ray_and_python_pins(instructions) -> None:
    (base,) = [a for k, a in instructions if k == "FROM"]
    image = re.sub(r"\$\{(\w+)\}", lambda m: _args(instructions)[m.group(1)], base)
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)(-[\w-]+)?", image)
    assert match, f"unexpected base image {image}"
    assert match.group(1) == _constraints()["ray"]
    python = f"{match.group(2)}.{match.group(3)}"
    assert python == "3.11"
    assert _pyproject()["project"]["requires-python"] == ">=3.10,<3.13"  # 3.11 inside


def test_installs_project_with_constraints(instructions) -> None:
    runs = [a for k, a in instructions if k == "RUN"]
    assert any(re.search(r"pip install -c constraints\.txt \.(\s|$)", run) for run in runs)
    assert any("pip install -c constraints.txt -r" in run for run in runs)
    copied = " ".join(a for k, a in instructions if k == "COPY")
    assert "constraints.txt" in copied and "pyproject.toml" in copied


def test_every_version_in_dockerfile_agrees_with_constraints(instructions) -> None:
    pins = _constraints()
    text = " ".join(a for _, a in instructions)
    for name, version in re.findall(r"([A-Za-z][\w.-]*)==([\w.+-]+)", text):
        assert pins.get(canonicalize_name(name)) == version, f"{name}=={version}"
    assert _args(instructions)["RAY_VERSION"] == pins["ray"]


def test_constraints_pin_cuda_torch_and_satisfy_pyproject() -> None:
    pins = _constraints()
    assert pins["torch"] == "2.13.0" and pins["torchvision"] == "0.28.0"
    for dep in _pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt (image would float)"
        assert req.specifier.contains(pins[name]), f"{req.name}=={pins[name]} vs {dep}"


def test_runs_as_non_root_without_baked_credentials(instructions) -> None:
    users = [a for k, a in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    for keyword, args in instructions:
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", args) or [args.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], args
        if keyword in ("ADD", "COPY"):
            assert not re.search(r"\.env\b|\.aws|credentials|\.pem|https?://", args), args


def test_workdir_and_cmd_match_the_manifests(instructions) -> None:
    workdirs = [a for k, a in instructions if k == "WORKDIR"]
    assert workdirs[-1] == "/app"  # infra/rayjob-label.yaml runs /app/infra/label-entrypoint.sh
    (cmd,) = [a for k, a in instructions if k == "CMD"]
    assert "infra/label-entrypoint.sh" in cmd
    assert (ROOT / "infra" / "label-entrypoint.sh").is_file()


def _included(path: str, patterns: list[str]) -> bool:
    """Docker's last-match-wins rule for .dockerignore (enough for our simple patterns)."""
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!")
        if fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(path, glob.replace("**/", "")):
            included = negated
    return included


def test_dockerignore_sends_code_and_keeps_secrets_out() -> None:
    lines = (ROOT / "infra" / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    for path in (
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "zegclip/weights.py",
        "pipeline/run.py",
        "jobs/label.py",
        "infra/label-entrypoint.sh",
    ):
        assert _included(path, patterns), path
    for path in (".venv/bin/python", ".git/config", ".env", "zegclip/.env", "out/x.parquet"):
        assert not _included(path, patterns), path
