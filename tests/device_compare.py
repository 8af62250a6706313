"""Device against the CPU oracle, the way the label job predicts: every model family on the
pipeline's ``sizes`` path (``image_preparer`` on the CPU, then ``predict(prepared, sizes)``).

Used by ``tests/gpu`` (CUDA vs CPU) and by a CPU test that runs the same code with CPU vs CPU,
so the comparison itself is exercised on machines without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from content import label_agreement

FAMILIES = ("zegclip", "zegot", "maskclip", "sclip", "clearclip", "naclip")
TRAINED = ("zegclip", "zegot")  # families that load from a checkpoint
NAMES = ["road", "car", "sky", "building", "tree", "person", "sidewalk", "sign"]


def family_spec(family: str, clip_model: str, folder: Path, **spec_fields):
    """``LabelerSpec`` of a seeded random-weight model of ``family``: a checkpoint saved in
    ``folder`` for ZegCLIP and ZegOT, a ``clip_weights`` file there for training-free ones."""
    import torch
    from tiny_models import save_random_clip_weights

    import zegclip

    if family not in TRAINED:
        weights = folder / f"clip-{Path(clip_model).stem}.safetensors"
        if not weights.exists():
            save_random_clip_weights(weights, clip_model)
        return zegclip.LabelerSpec(
            clip_model=clip_model,
            clip_pretrained=None,
            clip_weights=str(weights),
            method=family,
            **spec_fields,
        )
    path = folder / f"{family}-{Path(clip_model).stem}.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        clip = zegclip.ClipSpec(model=clip_model, pretrained=None)
        if family == "zegclip":
            model = zegclip.build_zegclip(zegclip.ZegCLIPConfig(clip=clip))
        else:
            from zegclip.models.zegot.config import ZegOTConfig
            from zegclip.models.zegot.model import build_zegot

            tiny = {"layers": (-2, -1)} if clip_model.endswith(".json") else {}  # 2-block ViT
            model = build_zegot(ZegOTConfig(clip=clip, **tiny))
        zegclip.save_checkpoint(model, path, embed_clip=True)
    return zegclip.LabelerSpec(checkpoint=str(path), **spec_fields)


def separated_embeddings(spec, vocab) -> np.ndarray:
    """Seeded random unit embeddings in the shape the family's encoder returns: random text
    towers map names to nearly parallel vectors, which would make every pixel a near-tie."""
    import dataclasses

    import zegclip

    one_template = dataclasses.replace(spec, templates="single")  # only the shape is used
    shape = zegclip.encode_vocabulary_for(one_template, vocab, use_cache=False).shape
    emb = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


def sizes_path(spec, vocab, emb: np.ndarray, photos: list[np.ndarray]) -> list:
    """Predictions the way the job makes them: CPU ``image_preparer``, then the predictor's
    ``predict(prepared, sizes)`` on ``spec.device``."""
    import zegclip

    prepare = zegclip.image_preparer(spec)
    predictor = zegclip.build_predictor(spec, vocab, emb)
    return predictor.predict([prepare(p) for p in photos], [p.shape[:2] for p in photos])


def compare_with_cpu(
    family: str, clip_model: str, folder: Path, photos: list[np.ndarray], device: str, precision
) -> dict:
    """Run ``family`` on ``device`` at ``precision`` and on the CPU in fp32 with the same
    weights and embeddings; returns label agreement and the largest confidence step."""
    import zegclip

    vocab = zegclip.Vocabulary.from_names(NAMES)
    oracle_spec = family_spec(family, clip_model, folder, device="cpu", precision="fp32")
    emb = separated_embeddings(oracle_spec, vocab)
    oracle = sizes_path(oracle_spec, vocab, emb, photos)
    spec = family_spec(family, clip_model, folder, device=device, precision=precision)
    got = sizes_path(spec, vocab, emb, photos)
    steps = [
        np.abs(a.confidence.astype(int) - b.confidence.astype(int)) for a, b in zip(got, oracle)
    ]
    return {
        "agreement": label_agreement([p.label_map for p in got], [p.label_map for p in oracle]),
        "max_confidence_step": int(max(s.max() for s in steps)),
        "counts_equal": all(
            np.array_equal(a.class_counts, b.class_counts) for a, b in zip(got, oracle)
        ),
    }
