"""Vocabulary encoding stops at the longest prompt's end-of-text token: same embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TINY_CLIP

import zegclip  # noqa: F401  (torchvision import shim before open_clip)
from zegclip.clip import ClipSpec, build_clip, tokenizer_for
from zegclip.templates import IMAGENET80
from zegclip.text import encode_names, encode_text_truncated

TINY = ClipSpec(model=TINY_CLIP, pretrained=None)
NAMES = ["car", "traffic light", "a very long class name with many words in it", "sky"]


@pytest.fixture(scope="module")
def clip_and_tokenizer():
    torch.manual_seed(0)
    return build_clip(TINY), tokenizer_for(TINY)


def test_truncated_tower_equals_open_clip_encode_text(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    tokens = tokenizer([t.format(n) for n in NAMES for t in IMAGENET80[:10]])
    with torch.inference_mode():
        full = F.normalize(clip.encode_text(tokens), dim=-1)  # unit rows, as encode_names uses
        ours = F.normalize(encode_text_truncated(clip, tokens), dim=-1)
    assert int(tokens.argmax(-1).max()) + 1 < tokens.shape[1]  # something was cut off
    assert (ours - full).abs().max().item() <= 1e-6


def test_encode_names_equals_the_full_context_recipe(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    templates = IMAGENET80[:16]
    with torch.inference_mode():
        ours = encode_names(clip, tokenizer, NAMES, templates, batch_size=7)
        prompts = tokenizer([t.format(n) for n in NAMES for t in templates])
        full = F.normalize(clip.encode_text(prompts).float(), dim=-1)
        full = F.normalize(full.reshape(len(NAMES), len(templates), -1).mean(1), dim=-1)
    assert ours.shape == (len(NAMES), full.shape[-1])
    assert (ours - full).abs().max().item() <= 1e-6
