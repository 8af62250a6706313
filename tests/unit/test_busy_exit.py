"""A second label / export / review run into an output another live run holds: exit 75 with one
line naming the holder, before Ray starts and before anything is planned, deleted or written."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import TINY_CLIP

from pipeline import lease

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_job_busy", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def held(tmp_path: Path):
    """An output folder whose lease another run holds, with a file a run would delete."""
    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    (out / "labels" / "part-unmarked.parquet").write_bytes(b"in flight")  # an orphan to a holder
    holder = lease.Lease(str(out), job="label", ttl_s=60)
    holder.acquire()
    yield out, holder
    holder.release()


def _busy_line(caplog) -> str:
    (line,) = [r.getMessage() for r in caplog.records if "output busy" in r.getMessage()]
    return line


@pytest.mark.slow  # imports torch and checks the tiny model: about 30 s on the loaded 2 cores
def test_label_exits_75_without_ray_or_deletions(held, tmp_path, caplog, monkeypatch) -> None:
    out, holder = held
    label = _load("label")
    monkeypatch.setattr(label, "_init_local_ray", lambda cfg: pytest.fail("Ray was started"))
    monkeypatch.setattr(label, "plan_job", lambda *a: pytest.fail("planned while busy"))
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(src / "a.png")
    (tmp_path / "vocab.txt").write_text("road\nsky\n")
    argv = [
        "--input",
        str(src),
        "--output",
        str(out),
        "--vocab",
        str(tmp_path / "vocab.txt"),
        "--clip-model",
        TINY_CLIP,
        "--clip-pretrained",
        "none",
        "--device",
        "cpu",
    ]
    with caplog.at_level(logging.INFO):
        assert label.main(argv) == lease.EXIT_BUSY == 75
    line = _busy_line(caplog)
    assert line.startswith("skipped: output busy") and holder.run_id in line
    assert "\n" not in line and "exit 75" in line
    assert (out / "labels" / "part-unmarked.parquet").read_bytes() == b"in flight"
    assert "75" in label.build_parser().epilog and "75" in label.__doc__


def _finished_run_stub(run: Path) -> Path:
    """What ``check_export`` reads of a labelling run: run.json and one part marker (the
    export never starts, so no Parquet is needed)."""
    (run / "_markers").mkdir(parents=True)
    (run / "_markers" / "part-0.json").write_text("[]")
    (run / "run.json").write_text(json.dumps({"vocabulary": ["red", "green"], "config": {}}))
    return run


def test_export_and_review_exit_75(held, tmp_path, caplog) -> None:
    out, holder = held
    _finished_run_stub(tmp_path / "run")
    with caplog.at_level(logging.INFO):
        code = _load("export").main([str(tmp_path / "run"), "--format", "coco", "--out", str(out)])
    assert code == 75 and holder.run_id in _busy_line(caplog)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert _load("review").main([str(tmp_path / "run"), "--out", str(out)]) == 75
    assert holder.run_id in _busy_line(caplog)
    assert sorted(p.name for p in out.iterdir()) == ["_lease.json", "labels"]
