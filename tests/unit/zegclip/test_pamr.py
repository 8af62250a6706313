"""PAMR after issue 23: equal to the old implementation, fewer eager ops, no graph break, one
fused kernel per compiled step, the compute-dtype option's plumbing and its label agreement on
real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from legacy_pamr import LegacyPAMR
from tiny_models import TINY_CLIP, requires_shared_data
from torch._dynamo.utils import counters
from torch._inductor import metrics

import zegclip
from bench.bench_pamr import label_agreement, labelled_photos
from bench.dispatch_count import OpCounter
from zegclip.cli import main
from zegclip.devices import refine_dtype
from zegclip.models.trainfree.model import build_frozen_clip
from zegclip.models.trainfree.pamr import PAMR, propagate
from zegclip.predictor import SegPredictor


def _inputs(n: int = 2, k: int = 5, size: tuple[int, int] = (40, 52), seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand((n, 3, *size), generator=generator)
    masks = torch.randn((n, k, *size), generator=generator)
    return image, masks


@pytest.mark.parametrize("mask_size", [(40, 52), (13, 17)])
def test_pamr_equals_the_old_implementation(mask_size):
    image, _ = _inputs()
    masks = torch.randn((2, 5, *mask_size), generator=torch.Generator().manual_seed(1))
    new, old = PAMR()(image, masks), LegacyPAMR()(image, masks)
    assert new.dtype == old.dtype == torch.float32 and new.shape == (2, 5, 40, 52)
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-7)


def test_pamr_batched_equals_each_image_alone():
    image, masks = _inputs(n=3)
    batched = PAMR()(image, masks)
    for i in range(3):
        torch.testing.assert_close(batched[i], PAMR()(image[i : i + 1], masks[i : i + 1])[0])


def test_pamr_eager_step_is_one_pad_and_sixteen_multiply_adds():
    image, masks = _inputs()
    with OpCounter() as new:
        PAMR(num_iter=10)(image, masks)
    with OpCounter() as old:
        LegacyPAMR(num_iter=10)(image, masks)
    assert new.ops["replication_pad2d"] == 1 + 10  # affinity + one per step (was 2 + 2 * 10)
    assert new.ops["mul"] - old.ops["mul"] == 10 and new.ops["addcmul_"] == 15 * 10
    assert new.ops["zeros_like"] == 0 and old.ops["zeros_like"] == 10
    assert sum(new.ops.values()) < sum(old.ops.values()) - 150


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_pamr_traces_as_one_graph(dtype):
    image, masks = _inputs(n=1, k=3, size=(24, 32))
    explained = torch._dynamo.explain(PAMR(num_iter=2))(image, masks, dtype)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


@pytest.mark.slow
def test_compiled_step_is_one_kernel_and_equals_eager():
    image, masks = _inputs(n=2, k=4, size=(24, 32))
    alpha = PAMR().affinity(image)
    weights = [alpha[:, p : p + 1] for p in range(alpha.shape[1])]
    torch._dynamo.reset()
    metrics.reset()
    fused = torch.compile(propagate, dynamic=False)(masks, weights, (8, 16))
    assert metrics.generated_kernel_count == 1
    torch.testing.assert_close(fused, propagate(masks, weights, (8, 16)), rtol=1e-5, atol=1e-6)


def test_compute_dtype_propagation_keeps_float32_sums_and_the_masks_dtype():
    image, masks = _inputs()
    out = PAMR()(image, masks, torch.bfloat16)
    assert out.dtype == torch.float32
    reference = PAMR()(image, masks)
    assert not torch.equal(out, reference)
    assert (out - reference).abs().max() < 0.03 * reference.abs().max()  # bf16: 2 ** -8


def test_refine_dtype_is_the_compute_dtype_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert refine_dtype(cuda, "bf16", "compute") is torch.bfloat16
    assert refine_dtype(cuda, "fp16", "compute") is torch.float16
    assert refine_dtype(cuda, "fp32", "compute") is None
    assert refine_dtype(cuda, "bf16", "fp32") is None
    assert refine_dtype(cpu, "bf16", "compute") is None
    with pytest.raises(ValueError, match="pamr_precision must be one of fp32, compute"):
        refine_dtype(cuda, "bf16", "bf16")


@requires_shared_data
def test_compute_dtype_pamr_agrees_with_float32_on_real_photos():
    """Synthetic NACLIP-like logits on real photos' ground truth (bench/bench_pamr.py): fp16
    propagation changes ~0.003 % of labels, bf16 ~0.02 %."""
    photos = labelled_photos((168, 224), per_set=1)
    assert len(photos) == 3
    assert label_agreement(photos, 21, torch.float16) >= 0.9999  # measured 0.99997
    assert label_agreement(photos, 21, torch.bfloat16) >= 0.9995  # measured 0.99978


def test_pamr_precision_flag_exits_2_naming_it(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("car\nroad\n")
    argv = ["segment", "a.png", "--vocab", str(vocab), "--out", str(tmp_path / "out")]
    assert main([*argv, "--pamr-precision", "bf16"]) == 2
    assert "--pamr-precision" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--pamr-precision"):
        zegclip.check_spec(zegclip.LabelerSpec(pamr_precision="fp16"))
    zegclip.check_spec(zegclip.LabelerSpec(pamr_precision="compute", clip_pretrained=None))


def test_predictor_refines_in_the_compute_dtype_on_cuda_only():

    scorer = build_frozen_clip(zegclip.ClipSpec(model=TINY_CLIP, pretrained=None), with_text=False)

    def predictor(**kwargs):
        return SegPredictor(scorer, np.zeros((2, 8)), np.arange(2), 2, **kwargs)

    assert predictor(precision="bf16", pamr_precision="compute").refine_dtype is None  # CPU
    assert predictor(precision="bf16").refine_dtype is None
    with pytest.raises(ValueError, match="pamr_precision"):
        predictor(pamr_precision="bf16")


@pytest.mark.slow
def test_compiled_predictor_refines_like_eager_with_one_graph_for_any_group_size():
    """``SegPredictor(compile=True)`` compiles ``scorer.refine`` once per prepared size and class
    count: groups of 2 and 3 images share one graph (the image count is dynamic)."""

    scorer = build_frozen_clip(zegclip.ClipSpec(model=TINY_CLIP, pretrained=None), with_text=False)
    scorer.pamr.num_iter = 2
    predictor = SegPredictor(scorer, np.zeros((4, 8)), np.arange(4), 4, compile=True)
    torch._dynamo.reset()
    counters.clear()
    for n in (2, 3):
        images, scores = _inputs(n=n, k=4, size=(24, 32), seed=n)
        compiled = predictor._refine_scores(scores, images)
        torch.testing.assert_close(compiled, scorer.refine(scores, images), rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1
