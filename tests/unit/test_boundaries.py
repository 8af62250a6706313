"""The model never imports Ray; the pipeline never imports torch or the model."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after_import(modules: list[str]) -> set[str]:
    code = (
        "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print(' '.join(sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def _package_modules(package: str) -> list[str]:
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(ROOT / package)])]


def test_zegclip_never_imports_ray_or_the_pipeline():
    loaded = _modules_after_import(_package_modules("zegclip"))
    assert "zegclip.labeler" in loaded
    assert not {m for m in loaded if m.split(".")[0] in {"ray", "pipeline", "boto3"}}
    assert "pyarrow.fs" not in loaded


def test_pipeline_never_imports_torch_or_the_model():
    loaded = _modules_after_import(_package_modules("pipeline"))
    assert "pipeline.predictor" in loaded
    assert not {m for m in loaded if m.split(".")[0] in {"torch", "zegclip", "open_clip"}}
