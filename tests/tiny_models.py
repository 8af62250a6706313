"""The 2-layer, width-64 CLIP every test builds (random weights; same code paths as ViT-B/16).

Its open_clip config lives in ``tests/data/tiny-test.json``; passing that path as a CLIP model
name registers it with open_clip in whichever process needs it (tests, job subprocesses, Ray
workers), so the library carries no test-only model.
"""

from __future__ import annotations

from pathlib import Path

TINY_CLIP = str(Path(__file__).resolve().parent / "data" / "tiny-test.json")
