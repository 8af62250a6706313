"""Vocabulary encoding time: ours (truncated at the longest end-of-text token, prompts batched by
length) vs open_clip's plain ``encode_text`` on the same prompts and weights, side by side.

Random ViT-B-16 text tower (``open_clip.create_model('ViT-B-16', pretrained=None)``), 8 classes x
80 ImageNet templates by default; also prints the largest difference of the unit embeddings.

Usage: ``python bench/bench_vocab.py [--model ViT-B-16] [--classes 8] [--threads 2]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import zegclip  # noqa: E402, F401  (torchvision import shim before open_clip)
from zegclip.clip import ClipSpec, build_clip, tokenizer_for  # noqa: E402
from zegclip.templates import IMAGENET80  # noqa: E402
from zegclip.text import encode_names  # noqa: E402

CLASSES = ["road", "car", "sky", "building", "tree", "person", "sidewalk", "traffic sign"]


def plain_encode(clip, tokenizer, names, templates, batch_size=256) -> torch.Tensor:
    """The pre-issue-11 recipe: full 77-token context through ``encode_text``."""
    prompts = [t.format(n) for n in names for t in templates]
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size])
        chunks.append(F.normalize(clip.encode_text(tokens).float(), dim=-1))
    per_prompt = torch.cat(chunks).reshape(len(names), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = ClipSpec(model=args.model, pretrained=None)
    torch.manual_seed(0)
    clip, tokenizer = build_clip(spec).eval(), tokenizer_for(spec)
    names = (CLASSES * (args.classes // len(CLASSES) + 1))[: args.classes]
    timings = {}
    with torch.inference_mode():
        for label, fn in (("open_clip encode_text", plain_encode), ("ours", encode_names)):
            start = time.perf_counter()
            timings[label] = (fn(clip, tokenizer, names, IMAGENET80), time.perf_counter() - start)
    (ref, t_ref), (ours, t_ours) = timings["open_clip encode_text"], timings["ours"]
    print(f"{args.model}, {len(names)} classes x {len(IMAGENET80)} templates, {args.threads} thr")
    print(f"| open_clip encode_text | {t_ref:.1f} s |\n| ours (truncated) | {t_ours:.1f} s |")
    print(f"speed-up {t_ref / t_ours:.2f}x, max |diff| {(ours - ref).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
