"""CUDA against the CPU oracle (run on a CUDA machine; skipped elsewhere, with the reason).

* Every family (ZegCLIP, ZegOT and the four training-free methods), ViT-B/16 with random weights
  and separated random class embeddings, on the pipeline's ``sizes`` path, on real photos
  (scikit-image's, three of one size and one of another): labels >= 99.9 % equal to the CPU's in
  fp32 and >= 99 % in bf16.
* The whole label job (``jobs/label.py``, tiny model, default training-free mode) on the GPU in
  fp32 and bf16 against the same job on the CPU: stored masks compared image by image.

The comparison code is ``tests/device_compare.py`` / ``tests/content.py``; the CPU test
``tests/unit/zegclip/test_device_compare.py`` runs it with CPU against CPU.
``pytest -q -s tests/gpu`` prints each agreement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from content import label_agreement, same_size_photos, stored_maps, write_pngs
from device_compare import FAMILIES, NAMES, compare_with_cpu
from tiny_models import TINY_CLIP, save_random_clip_weights

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

THRESHOLDS = {"fp32": 0.999, "bf16": 0.99}


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Three 480x360 real photos and one 640x427 (two size groups)."""
    return same_size_photos(3, (360, 480)) + same_size_photos(5, (427, 640))[4:]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_on_cuda_matches_the_cpu_oracle(family, precision, photos, tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "gpu-checkpoints"
    folder.mkdir(exist_ok=True)
    result = compare_with_cpu(family, "ViT-B-16", folder, photos, "cuda", precision)
    print(f"\n{family} {precision}: {result}")
    assert result["agreement"] >= THRESHOLDS[precision], result


def _label(src: Path, out: Path, vocab: Path, device: str, precision: str) -> None:
    from jobs.label import main

    weights = src.parent / "clip.safetensors"  # one seeded random model for every process
    if not weights.exists():
        save_random_clip_weights(weights)
    code = main(
        [
            "--input", str(src), "--output", str(out), "--vocab", str(vocab),
            "--clip-model", TINY_CLIP, "--clip-pretrained", "none",
            "--clip-weights", str(weights), "--batch-size", "4",
            "--device", device, "--precision", precision, "--concurrency", "1",
            "--num-gpus-per-actor", "1" if device == "cuda" else "0",
        ]
    )  # fmt: skip
    assert code == 0


def test_label_job_masks_on_cuda_match_the_cpu_job(tmp_path):
    pytest.importorskip("ray")
    src = tmp_path / "in"
    write_pngs(same_size_photos(8, (360, 480)), src)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(NAMES) + "\n")
    _label(src, tmp_path / "cpu", vocab, "cpu", "fp32")
    cpu = stored_maps(str(tmp_path / "cpu"))
    for precision, threshold in THRESHOLDS.items():
        out = tmp_path / precision
        _label(src, out, vocab, "cuda", precision)
        gpu = stored_maps(str(out))
        assert sorted(gpu) == sorted(cpu)
        agreement = label_agreement([gpu[k][0] for k in cpu], [v[0] for v in cpu.values()])
        print(f"\nlabel job, cuda {precision} vs cpu: {100 * agreement:.3f} % of pixels agree")
        assert agreement >= threshold
