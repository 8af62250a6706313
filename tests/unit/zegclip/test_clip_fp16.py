"""Float16 CLIP weight files (as OpenAI ships them) load for every family, method and crop size.

The file is the tiny CLIP's state dict in float16 (OpenAI-format keys are open_clip's for a
standard CLIP), built at a native 224 so every recipe (224, 448 and ZegCLIP's 512) is off-native.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from tiny_models import TINY_CLIP

import zegclip
from zegclip.clip import ClipSpec, build_clip, native_image_size
from zegclip.models.trainfree.model import RECIPES, build_frozen_clip
from zegclip.models.zegclip.build import build_zegclip
from zegclip.models.zegclip.config import ZegCLIPConfig
from zegclip.models.zegot.config import ZegOTConfig
from zegclip.models.zegot.model import build_zegot


@pytest.fixture(scope="module")
def native224(tmp_path_factory) -> str:
    """The tiny CLIP's config at a native input size of 224 (a 14 x 14 positional table)."""
    cfg = json.loads(Path(TINY_CLIP).read_text())
    cfg["vision_cfg"]["image_size"] = 224
    path = tmp_path_factory.mktemp("cfg") / "tiny-test-native224.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def save_weights(model: str, path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    clip = build_clip(ClipSpec(model=model, pretrained=None, image_size=224))
    state = {k: v.to(dtype) for k, v in clip.state_dict().items()}
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def fp16_file(native224, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("w") / "tiny_fp16.pt"
    return path, save_weights(native224, path, torch.float16)


def test_open_clip_alone_fails_on_float16_files_off_native(native224, fp16_file):
    """The failure this fixes: open_clip resizes the float16 table at load (antialiased bicubic)."""
    name = Path(native224).stem
    assert native_image_size(ClipSpec(model=native224)) == 224
    with pytest.raises(NotImplementedError, match="compute_index_ranges_weights"):
        open_clip.create_model(name, pretrained=str(fp16_file[0]), force_image_size=448)


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_training_free_methods_load_float16_at_native_size(native224, fp16_file, method):
    path, state = fp16_file
    model = build_frozen_clip(ClipSpec(model=native224, pretrained=str(path)), method=method)
    table = model.visual.positional_embedding
    assert table.dtype == torch.float32 and torch.equal(
        table, state["visual.positional_embedding"].float()
    )
    crop = RECIPES[method].crop
    emb = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    with torch.no_grad():
        scores = model.crop_scores(torch.randn(1, 3, crop, crop), emb)
    assert scores.shape == (1, 3, crop, crop) and torch.isfinite(scores).all()


def resized_like_open_clip(table: torch.Tensor, image_size: int, model: str) -> torch.Tensor:
    """open_clip's own load-time resize, applied to the float32 table."""
    target = build_clip(ClipSpec(model=model, pretrained=None, image_size=image_size))
    state = {"visual.positional_embedding": table.float()}
    open_clip.model.resize_pos_embed(state, target)
    return state["visual.positional_embedding"]


def test_zegclip_and_zegot_load_float16_at_512(native224, fp16_file):
    path, state = fp16_file
    spec = ClipSpec(model=native224, pretrained=str(path), image_size=512)
    expected = resized_like_open_clip(state["visual.positional_embedding"], 512, native224)
    zegclip_model = build_zegclip(ZegCLIPConfig(clip=spec, num_prompt_tokens=2, decoder_ffn_dim=64))
    zegot_model = build_zegot(
        ZegOTConfig(clip=spec, num_prompts=2, num_context_tokens=2, layers=(-2, -1))
    )
    for visual in (zegclip_model.clip_visual, zegot_model.clip_visual):
        assert visual.positional_embedding.shape == (1 + 32 * 32, 64)
        torch.testing.assert_close(visual.positional_embedding, expected, atol=0, rtol=0)
        torch.testing.assert_close(visual.conv1.weight, state["visual.conv1.weight"].float())


def test_float32_files_load_exactly_as_open_clip_forces_the_size(native224, tmp_path):
    """ZegCLIP's load-time rule is unchanged: same tensors as ``force_image_size=512``."""
    path = tmp_path / "tiny_fp32.pt"
    save_weights(native224, path, torch.float32)
    ours = build_clip(ClipSpec(model=native224, pretrained=str(path), image_size=512))
    forced = open_clip.create_model(
        Path(native224).stem, pretrained=str(path), force_image_size=512
    )
    theirs = forced.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_labeler_clip_weights_flag_with_float16_file_and_clearclip(native224, fp16_file):
    """``--clip-weights FILE --method clearclip``: the path the failure was first seen on."""
    spec = zegclip.LabelerSpec(
        checkpoint=None,
        clip_model=native224,
        clip_pretrained=None,
        clip_weights=str(fp16_file[0]),
        method="clearclip",
        templates="single",
        device="cpu",
    )
    vocab = zegclip.Vocabulary.from_names(["dog", "car"])
    zegclip.check_spec(spec)
    emb = zegclip.encode_vocabulary_for(spec, vocab, use_cache=False)
    predictor = zegclip.build_predictor(spec, vocab, emb)
    image = np.random.default_rng(0).integers(0, 256, (300, 520, 3), dtype=np.uint8)
    pred = predictor.predict([image])[0]
    assert pred.label_map.shape == (300, 520) and pred.confidence.dtype == np.uint8
    assert pred.class_counts.sum() == int((pred.label_map != 255).sum())


def test_random_weights_are_the_same_in_every_process_and_leave_the_rng_alone():
    """``--clip-pretrained none``: every Ray actor builds one model (fixed seed, forked RNG)."""
    import subprocess
    import sys

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = build_clip(ClipSpec(model=TINY_CLIP, pretrained=None, image_size=224))
    assert torch.equal(torch.rand(3), before)  # the caller's random stream is untouched
    second = build_clip(ClipSpec(model=TINY_CLIP, pretrained=None, image_size=224))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    script = (
        "import sys; sys.path.insert(0, 'tests'); from tiny_models import TINY_CLIP;"
        "from zegclip.clip import ClipSpec, build_clip;"
        "print(float(build_clip(ClipSpec(model=TINY_CLIP, pretrained=None, image_size=224))"
        ".visual.conv1.weight.sum()))"
    )
    root = Path(__file__).resolve().parents[3]
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root, check=False
    )
    assert other.returncode == 0, other.stderr
    assert float(other.stdout.strip()) == pytest.approx(float(first.visual.conv1.weight.sum()))
