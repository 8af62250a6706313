"""GPU checks, run by hand on a CUDA machine (skipped elsewhere): bf16 vs fp32 agreement of the
device predictor on real photos, and one end-to-end label job on the GPU.

``pytest -q -s tests/gpu`` prints the agreement numbers that docs/gpu.md reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import TINY_CLIP

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

NAMES = ["road", "car", "sky", "building", "tree", "person", "sidewalk", "sign"]


def _photos(data_root: Path, n: int = 4) -> list[np.ndarray]:
    from PIL import Image

    paths = sorted((data_root / "camvid" / "test").glob("*.jpg"))[:n]
    if not paths:
        pytest.skip(f"no CamVid photos under {data_root}")
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.mark.parametrize("clip_model", [TINY_CLIP, "ViT-B-16"])
def test_bf16_labels_agree_with_fp32(clip_model, data_root, tmp_path):
    """Random-weight ZegCLIP: bf16 autocast vs fp32 on the GPU, label agreement and confidence."""
    import zegclip

    torch.manual_seed(0)
    clip = zegclip.ClipSpec(model=clip_model, pretrained=None)
    model = zegclip.build_zegclip(zegclip.ZegCLIPConfig(clip=clip))
    ckpt = zegclip.save_checkpoint(model, tmp_path / "z.safetensors", embed_clip=True)
    vocab = zegclip.Vocabulary.from_names(NAMES)
    photos = _photos(data_root)
    results = {}
    for precision in ("fp32", "bf16"):
        spec = zegclip.LabelerSpec(checkpoint=str(ckpt), device="cuda", precision=precision)
        emb = zegclip.encode_vocabulary_for(spec, vocab, use_cache=False)
        results[precision] = zegclip.build_predictor(spec, vocab, emb).predict(photos)
    agree = np.mean(
        [(a.label_map == b.label_map).mean() for a, b in zip(*results.values(), strict=True)]
    )
    diff = max(
        np.abs(a.confidence.astype(int) - b.confidence.astype(int)).max()
        for a, b in zip(*results.values(), strict=True)
    )
    print(f"\n{Path(clip_model).stem}: bf16 vs fp32 label agreement {100 * agree:.2f} %, "
          f"max confidence difference {diff}/255")  # fmt: skip
    assert agree > 0.95 and diff <= 16


def test_label_job_runs_on_the_gpu(data_root, tmp_path):
    pytest.importorskip("ray")
    import shutil

    from jobs.label import main

    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((data_root / "camvid" / "test").glob("*.jpg"))[:8]:
        shutil.copy(p, src / p.name)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "out"
    code = main(
        [
            "--input", str(src), "--output", str(out), "--vocab", str(vocab),
            "--clip-model", TINY_CLIP, "--clip-pretrained", "none",
            "--device", "cuda", "--batch-size", "4", "--num-gpus-per-actor", "0.5",
        ]
    )  # fmt: skip
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["ok"] == 8, run["counts"]
