"""The crop forward ``torch.compile`` sees is one graph: no graph break (issue 23).

A break (a host read such as ``bool(seen.any())`` or a Sinkhorn tolerance test, a Python-side
cache miss) splits the compiled forward and syncs the GPU between the pieces. Traced with
``torch._dynamo.explain`` (no code generation) on the tiny random CLIP.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_CLIP

import zegclip
from zegclip.models.trainfree.model import build_frozen_clip

NAMES = ["car", "road", "sky"]


def _scorer(mode: str):
    torch.manual_seed(0)
    clip = zegclip.ClipSpec(model=TINY_CLIP, pretrained=None)
    if mode == "naclip":
        return build_frozen_clip(clip), 224
    config = zegclip.ZegCLIPConfig(
        clip=clip, num_prompt_tokens=4, decoder_ffn_dim=128, seen_classes=("car",)
    )
    return zegclip.build_zegclip(config), 512


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["zegclip", "naclip"])
def test_crop_forward_has_no_graph_break(mode):
    scorer, crop = _scorer(mode)
    with torch.inference_mode():
        emb = scorer.encode_vocabulary(NAMES)
        seen = torch.tensor(scorer.seen_mask(NAMES)) if mode == "zegclip" else None
        crops = torch.randn(1, 3, crop, crop)
        try:
            explained = torch._dynamo.explain(scorer.crop_scores)(crops, emb, seen)
        finally:
            torch._dynamo.reset()
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
