"""ZegCLIP-family zero-shot semantic segmentation on open_clip (no mmseg, no ray).

Public API::

    model = zegclip.load_model(path, device="cpu")        # ours (.safetensors) or official .pth
    x = zegclip.preprocess(image_rgb_uint8)                # (1, 3, H, W) float32
    emb = model.encode_vocabulary(names, templates=["a photo of a {}"])   # (C, D)
    logits = model.mask_logits(x_512, emb)                 # (B, C, 32, 32)
    scores = model.slide_scores(x, emb, seen=seen_mask)    # (B, C, H, W)

Labelling jobs use :class:`LabelerSpec` with :func:`encode_vocabulary_for` (driver, once) and
:func:`build_predictor` (each replica).
"""

from zegclip._torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

from zegclip.clip import ClipSpec, WeightsError  # noqa: E402
from zegclip.io.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from zegclip.io.registry import load_model  # noqa: E402
from zegclip.labeler import (  # noqa: E402
    LabelerSpec,
    build_predictor,
    check_spec,
    describe,
    encode_vocabulary_for,
    image_preparer,
    min_score_in_use,
)
from zegclip.models.scorer import DenseScorer, count_trainable  # noqa: E402
from zegclip.models.zegclip.build import build_zegclip  # noqa: E402
from zegclip.models.zegclip.config import ZegCLIPConfig  # noqa: E402
from zegclip.models.zegclip.model import ZegCLIP  # noqa: E402
from zegclip.predictor import Prediction, SegPredictor  # noqa: E402
from zegclip.preprocess import preprocess  # noqa: E402
from zegclip.validate import (  # noqa: E402
    check_checkpoint,
    check_choice,
    check_clip_model,
    check_clip_source,
    check_device,
)
from zegclip.vocab import Vocabulary, VocabularyError, load_vocabulary  # noqa: E402

__all__ = [
    "CheckpointError",
    "DenseScorer",
    "ClipSpec",
    "LabelerSpec",
    "Prediction",
    "SegPredictor",
    "Vocabulary",
    "VocabularyError",
    "WeightsError",
    "ZegCLIP",
    "ZegCLIPConfig",
    "build_predictor",
    "image_preparer",
    "min_score_in_use",
    "build_zegclip",
    "check_checkpoint",
    "check_choice",
    "check_clip_model",
    "check_clip_source",
    "check_device",
    "check_spec",
    "count_trainable",
    "describe",
    "encode_vocabulary_for",
    "load_model",
    "load_vocabulary",
    "preprocess",
    "save_checkpoint",
]
