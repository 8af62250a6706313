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


def tiny_clip_weights(path: Path, seed: int = 0) -> Path:
    """Save the tiny CLIP's random weights (seeded) as safetensors at ``path``: a
    ``--clip-weights`` file that gives the same model in every process (Ray workers, servers).
    """
    import torch
    from safetensors.torch import save_file

    from zegclip.clip import ClipSpec, build_clip

    torch.manual_seed(seed)
    state = build_clip(ClipSpec(model=TINY_CLIP, pretrained=None)).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
