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
    from safetensors.torch import save_file

    from zegclip.clip import ClipSpec, build_clip, native_image_size

    spec = ClipSpec(model=clip_model, pretrained=None)
    clip = build_clip(
        ClipSpec(model=clip_model, pretrained=None, image_size=native_image_size(spec))
    )
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, path)
    return path


def save_tiny_zegclip_checkpoint(path: Path) -> Path:
    """A seeded random tiny ZegCLIP (default config, no seen classes) as a checkpoint with its
    CLIP embedded, for ``--checkpoint``."""
    import torch

    import zegclip

    torch.manual_seed(0)
    clip = zegclip.ClipSpec(model=TINY_CLIP, pretrained=None)
    model = zegclip.build_zegclip(zegclip.ZegCLIPConfig(clip=clip))
    return zegclip.save_checkpoint(model, path, embed_clip=True)


def tiny_predictor(mode: str, names: list[str], device: str = "cpu", **kwargs):
    """A seeded tiny ``SegPredictor`` over ``names`` (one row per class): ZegCLIP with "car"
    and "road" seen, or NACLIP (PAMR on, the job's default mode), on ``device``; ``kwargs``
    go to ``SegPredictor``."""
    import numpy as np
    import torch

    import zegclip
    from zegclip.models.trainfree.model import build_frozen_clip

    torch.manual_seed(0)
    clip = zegclip.ClipSpec(model=TINY_CLIP, pretrained=None)
    if mode == "naclip":
        scorer = build_frozen_clip(clip)
    else:
        config = zegclip.ZegCLIPConfig(
            clip=clip, num_prompt_tokens=4, decoder_ffn_dim=128, seen_classes=("car", "road")
        )
        scorer = zegclip.build_zegclip(config)
    with torch.inference_mode():
        emb = scorer.encode_vocabulary(names, templates=["a {}."])
    return zegclip.SegPredictor(
        scorer.to(device),
        emb,
        np.arange(len(names)),
        len(names),
        seen=scorer.seen_mask(names),
        min_score=scorer.default_min_score,
        device=device,
        **kwargs,
    )
