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


def save_random_clip_weights(path: Path, clip_model: str = TINY_CLIP) -> Path:
    """Seeded random open_clip weights of ``clip_model`` at its native size, as a safetensors
    file for ``--clip-weights`` (the same weights ``--clip-pretrained none`` builds from its
    fixed seed, as a file: the real loading path)."""
    import torch
    from safetensors.torch import save_file

    from zegclip.clip import ClipSpec, build_clip, native_image_size

    spec = ClipSpec(model=clip_model, pretrained=None)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        clip = build_clip(
            ClipSpec(model=clip_model, pretrained=None, image_size=native_image_size(spec))
        )
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, path)
    return path
