"""Convert the authors' released mmseg ``.pth`` checkpoints (VOC, COCO) into a ZegCLIP model.

Key mapping (N = block/layer index)::

    backbone.{conv1,class_embedding,positional_embedding,ln_pre,transformer,ln_post,proj}.*
        -> clip.visual.*                          (frozen ViT, OpenAI names = open_clip names)
    backbone.{prompt_embeddings,deep_prompt_embeddings,prompt_proj,prompt_norm}.*
        -> backbone.*                             (trainable deep prompts)
    text_encoder.*                      -> clip.*  (frozen text tower)
    decode_head.q_proj.*                -> head.relation.q_proj.*
    decode_head.decoder_1.layers.N.{multihead_attn,norm2,norm3,linear1,linear2}.*
        -> head.layers.N.*
    decode_head.decoder_1.layers.N.{self_attn,norm1}.*, decode_head.loss_decode.*  (dropped:
        never used by the official forward pass / training-only buffers)

The architecture is inferred from tensor shapes (heads = width // 64, as in CLIP). Anything that
cannot be mapped is refused with the offending keys named.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from zegclip.clip import ClipSpec
from zegclip.io.checkpoint import CLIP_PREFIX, CheckpointError, load_clip_into, load_trainable
from zegclip.models.zegclip.build import build_zegclip
from zegclip.models.zegclip.config import ZegCLIPConfig
from zegclip.models.zegclip.model import ZegCLIP
from zegclip.templates import SINGLE, ZEGCLIP15

_PROMPT_KEY = re.compile(r"^(prompt_embeddings|deep_prompt_embeddings|prompt_proj\.|prompt_norm\.)")
_DROPPED = re.compile(r"^decode_head\.(decoder_1\.layers\.\d+\.(self_attn|norm1)\.|loss_decode\.)")
_HEAD_LAYER = re.compile(
    r"^decode_head\.decoder_1\.layers\.(\d+)\.((multihead_attn|norm2|norm3|linear1|linear2)\..*)$"
)


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an mmcv checkpoint's ``state_dict`` with ``weights_only=True``.

    Raises:
        CheckpointError: the file is not a weights-only loadable mmcv checkpoint.
    """
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors surface as several types
        raise CheckpointError(
            f"{path} could not be read with torch.load(weights_only=True): {e}. Only plain "
            "tensor checkpoints are accepted; re-save it as {'state_dict': model.state_dict()}."
        ) from e
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} holds no state_dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def map_official_keys(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Split an official state dict into (clip weights ``clip.*``, trainable weights).

    Raises:
        CheckpointError: keys that match no documented pattern.
    """
    clip, trainable, unknown = {}, {}, []
    for key, value in state.items():
        if key.startswith("backbone."):
            rest = key[len("backbone.") :]
            if _PROMPT_KEY.match(rest):
                trainable[f"backbone.{rest}"] = value
            else:
                clip[f"{CLIP_PREFIX}visual.{rest}"] = value
        elif key.startswith("text_encoder."):
            clip[f"{CLIP_PREFIX}{key[len('text_encoder.') :]}"] = value
        elif key.startswith("decode_head.q_proj."):
            trainable["head.relation." + key[len("decode_head.") :]] = value
        elif match := _HEAD_LAYER.match(key):
            trainable[f"head.layers.{match.group(1)}.{match.group(2)}"] = value
        elif not _DROPPED.match(key):
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} official keys match no known ZegCLIP pattern, e.g. {unknown[:5]}; "
            "is this a ZegCLIP (VPTCLIPVisionTransformer + ATMSingleHeadSeg) checkpoint?"
        )
    return clip, trainable


def infer_config(
    state: dict[str, torch.Tensor],
    *,
    seen_classes: tuple[str, ...] = (),
    templates: tuple[str, ...] = SINGLE,
) -> ZegCLIPConfig:
    """Architecture from tensor shapes.

    Raises:
        CheckpointError: a required tensor is missing.
    """
    try:
        return ZegCLIPConfig(
            clip=ClipSpec(
                model="ViT-B-16",
                pretrained=None,
                config=_clip_config(state),
                quick_gelu=True,
                image_size=_image_size(state),
            ),
            num_prompt_tokens=state["backbone.prompt_embeddings"].shape[1],
            decoder_layers=_count(state, r"decode_head\.decoder_1\.layers\.(\d+)\.linear1\.weight"),
            decoder_heads=state["decode_head.q_proj.weight"].shape[0] // 64,
            decoder_ffn_dim=state["decode_head.decoder_1.layers.0.linear1.weight"].shape[0],
            seen_classes=seen_classes,
            templates=templates,
        )
    except KeyError as e:
        raise CheckpointError(
            f"official checkpoint lacks {e}; cannot infer the architecture"
        ) from e


def _image_size(state: dict[str, torch.Tensor]) -> int:
    grid = int(round((state["backbone.positional_embedding"].shape[0] - 1) ** 0.5))
    return grid * state["backbone.conv1.weight"].shape[-1]


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def _clip_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    width = state["backbone.conv1.weight"].shape[0]
    text_width = state["text_encoder.token_embedding.weight"].shape[1]
    return {
        "embed_dim": state["backbone.proj"].shape[1],
        "vision_cfg": {
            "image_size": _image_size(state),
            "layers": _count(state, r"backbone\.transformer\.resblocks\.(\d+)\.ln_1\.weight"),
            "width": width,
            "patch_size": state["backbone.conv1.weight"].shape[-1],
            "head_width": 64,
            "mlp_ratio": state["backbone.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        },
        "text_cfg": {
            "context_length": state["text_encoder.positional_embedding"].shape[0],
            "vocab_size": state["text_encoder.token_embedding.weight"].shape[0],
            "width": text_width,
            "heads": text_width // 64,
            "layers": _count(state, r"text_encoder\.transformer\.resblocks\.(\d+)\.ln_1\.weight"),
        },
    }


def convert_official(
    path: str | Path,
    *,
    seen_classes: tuple[str, ...] = (),
    templates: tuple[str, ...] | None = None,
) -> ZegCLIP:
    """Official ``.pth`` -> ZegCLIP (CPU, eval) with CLIP weights taken from the file.

    Args:
        path: the authors' checkpoint.
        seen_classes: training classes (get the inductive -0.1 shift at inference).
        templates: prompt templates; default ``single`` for <= 20 prompt tokens (VOC configs),
            ``zegclip15`` otherwise (COCO configs).
    """
    state = read_official_state_dict(path)
    if templates is None:
        num_tokens = state.get("backbone.prompt_embeddings", torch.zeros(1, 10)).shape[1]
        templates = SINGLE if num_tokens <= 20 else ZEGCLIP15
    config = infer_config(state, seen_classes=seen_classes, templates=templates)
    clip, trainable = map_official_keys(state)
    model = build_zegclip(config, load_clip_weights=False)
    load_clip_into(model, {k: v.float() for k, v in clip.items()})
    load_trainable(model, {k: v.float() for k, v in trainable.items()})
    return model.eval()
