"""The driver only sees small per-part records: its peak memory does not grow with the run.

5,000 small real photos (bundled sample photos resized to 120x90) through the real pipeline
on a local Ray with the no-op predictor of ``bench/plumbing_run.py``; the bound is loose (Ray
and pyarrow alone take about 240 MB). ``bench/bench_pipeline.py --plumbing 1000 5000 20000``
measures the slope (+0.27 MB per 1,000 images on the development VM; docs/incremental.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import REPO_ROOT
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NUM_IMAGES = 5000
DRIVER_PEAK_BOUND_MB = 400


def test_driver_peak_rss_is_bounded_on_5000_images(tmp_path: Path, sample_photos) -> None:
    src = tmp_path / "in"
    src.mkdir()
    photos = [Image.open(p).convert("RGB").resize((120, 90)) for p in sample_photos.jpegs(50)]
    for i in range(NUM_IMAGES):
        photos[i % len(photos)].save(src / f"img{i:06d}.jpg", quality=90)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    runner = REPO_ROOT / "bench" / "plumbing_run.py"
    done = subprocess.run(
        [sys.executable, str(runner), str(src), str(tmp_path / "out")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["images"] == NUM_IMAGES
    assert result["driver_peak_rss_mb"] < DRIVER_PEAK_BOUND_MB, result
