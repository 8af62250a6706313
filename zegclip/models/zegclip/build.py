"""Assemble ZegCLIP from a config: frozen CLIP (+ its weights) and fresh trainable parts."""

from __future__ import annotations

import logging

from zegclip.clip import build_towers, tokenizer_for
from zegclip.models.scorer import count_trainable
from zegclip.models.zegclip.backbone import PromptedViT
from zegclip.models.zegclip.config import ZegCLIPConfig
from zegclip.models.zegclip.decoder import SegHead
from zegclip.models.zegclip.model import ZegCLIP

logger = logging.getLogger(__name__)


def build_zegclip(
    config: ZegCLIPConfig, *, load_clip_weights: bool = True, with_text: bool = True
) -> ZegCLIP:
    """Build ZegCLIP in eval mode; CLIP frozen, prompts and head trainable.

    Args:
        config: model config.
        load_clip_weights: load CLIP weights from ``config.clip.pretrained``; False when the caller
            loads embedded weights.
        with_text: keep the text tower (needed to encode vocabularies).
    """
    visual, clip = build_towers(config.clip, load_weights=load_clip_weights)
    backbone = PromptedViT(visual, config.num_prompt_tokens, dropout=config.dropout)
    head = SegHead(
        backbone.output_dim,
        num_layers=config.decoder_layers,
        num_heads=config.decoder_heads,
        ffn_dim=config.decoder_ffn_dim,
        dropout=config.dropout,
    )
    model = ZegCLIP(
        config,
        backbone,
        head,
        text=clip if with_text else None,
        tokenizer=tokenizer_for(config.clip) if with_text else None,
    )
    logger.info("ZegCLIP built: %s trainable parameters", f"{count_trainable(model):,}")
    return model.eval()
