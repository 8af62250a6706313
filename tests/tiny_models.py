"""What tests share: the tiny CLIP every test builds and where the real photos live.

The tiny CLIP has 2 layers of width 64 (random weights; same code paths as ViT-B/16).

Its open_clip config lives in ``tests/data/tiny-test.json``; passing that path as a CLIP model
name registers it with open_clip in whichever process needs it (tests, job subprocesses, Ray
workers), so the library carries no test-only model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CLIP = str(Path(__file__).resolve().parent / "data" / "tiny-test.json")

# Real photos with ground truth (CamVid, PASCAL VOC, ADE20K samples) live beside the repository,
# never inside it. CI provides them; a clone without them skips the tests that need them.
DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NO_DATA_REASON = (
    f"real-photo test data not found at {DATA_ROOT} (../shared/data beside the repository; "
    "CI provides it)"
)
requires_shared_data = pytest.mark.skipif(not DATA_ROOT.is_dir(), reason=NO_DATA_REASON)
