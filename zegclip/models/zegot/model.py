"""ZegOT (Kim, Oh & Ye, arXiv 2301.12171): frozen CLIP, learnable text prompts, optimal transport.

Both CLIP towers stay frozen. What trains (and what checkpoints store):

* ``prompts.contexts`` (N, M, W): N CoOp-style context sets (:mod:`zegclip.models.zegot.prompts`);
* ``align.*``: the Deep Local Feature Alignment / MPOT part, per aligned ViT block l a
  relationship descriptor ``q_l = proj_l([g_l * t, t])`` (ZegCLIP's, reused from
  :mod:`zegclip.models.zegclip.decoder`; an ICLR-2024 reviewer describes ZegOT's deep alignment
  as exactly this, extended to several layers), plus softmax layer weights and a sigmoid logit
  scale/bias.

Per aligned block l, the block's tokens go through CLIP's frozen ``ln_post`` + ``proj``; its class
token gives ``g_l`` and its patch tokens ``p_l`` (both L2-normalised). Pixel-prompt similarities
``cos(p_l, q_l)`` are refined by a log-domain Sinkhorn plan per image and class (cost
``1 - cos``, uniform marginals, eps 0.05, <= 100 iterations, tol 1e-6) into
``S_l = sum_n M N T ⊙ sim`` (:func:`zegclip.models.zegot.sinkhorn.prompt_transport_score`).
The final map is
``exp(s) * (sum_l w_l S_l) / N + b`` with ``w = softmax(layer_weights)``.

Where the paper is silent, choices follow OTSeg's released code (the authors' follow-up; ZegOT's
own code was never released): OT per (image, class) between pixels and prompts, gradients
through the unrolled Sinkhorn, the 0.1 seen-class shift at inference. Our own choices, documented
because neither paper fixes them: layer weights start equal (a plain mean) and are learned, so
training can down-weight blocks whose projected tokens align poorly with text; descriptors start
as identity on ``t`` (untrained ZegOT = zero-shot CLIP + OT); a learned logit scale/bias (2
scalars) maps the bounded score ``[-N, N]`` to the sigmoid logits ZegCLIP's focal + dice losses
expect.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import VisionTransformer
from torch import nn

from zegclip.clip import build_towers, tokenizer_for
from zegclip.models.mask_scorer import MaskLogitScorer
from zegclip.models.scorer import count_trainable
from zegclip.models.vit import bilinear_positional, embed_tokens
from zegclip.models.zegclip.decoder import RelationshipDescriptor
from zegclip.models.zegot.config import ZegOTConfig
from zegclip.models.zegot.prompts import PromptContexts, check_text_tower
from zegclip.models.zegot.sinkhorn import prompt_transport_score
from zegclip.text import Tokenizer

logger = logging.getLogger(__name__)

TRAINABLE_PREFIXES = ("prompts.", "align.")
INIT_LOGIT_SCALE = 10.0  # SigLIP's sigmoid temperature init
INIT_LOGIT_BIAS = -2.5  # logit 0 at a mean transported similarity of 0.25


class DeepAlignment(nn.Module):
    """Per-layer relationship descriptors, layer weights and the logit scale/bias.

    Args:
        dim: D, CLIP's joint embedding size.
        num_layers: aligned ViT blocks.
    """

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.relations = nn.ModuleList(RelationshipDescriptor(dim) for _ in range(num_layers))
        self.layer_weights = nn.Parameter(torch.zeros(num_layers))  # softmax -> plain mean
        self.logit_scale = nn.Parameter(torch.tensor(math.log(INIT_LOGIT_SCALE)))
        self.logit_bias = nn.Parameter(torch.tensor(INIT_LOGIT_BIAS))
        with torch.no_grad():
            for rel in self.relations:  # q = t at init: [g * t, t] @ [0 | I]^T
                rel.q_proj.weight.zero_()
                rel.q_proj.weight[:, dim:] = torch.eye(dim)
                rel.q_proj.bias.zero_()

    def queries(self, layer: int, global_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Args: global_emb (B, D); text_emb (C, N, D). Returns (B, C, N, D), L2-normalised."""
        c, n, d = text_emb.shape
        q = self.relations[layer](global_emb, text_emb.reshape(c * n, d))  # (B, C*N, D)
        return F.normalize(q.reshape(-1, c, n, d), dim=-1)

    def combine(self, layer_scores: list[torch.Tensor], num_prompts: int) -> torch.Tensor:
        """Weighted sum of per-layer (B, C, h, w) scores -> sigmoid logits of the same shape."""
        weights = self.layer_weights.softmax(dim=0)
        total = sum(w * s for w, s in zip(weights, layer_scores))
        return self.logit_scale.exp() * total / num_prompts + self.logit_bias


class ZegOT(MaskLogitScorer):
    """The ZegOT segmentor (same surfaces as :class:`zegclip.ZegCLIP`).

    Args:
        config: architecture and inference settings.
        visual: frozen open_clip ViT.
        prompts: learnable context sets.
        align: deep alignment (trainable).
        text: open_clip CLIP holding the frozen text tower (``visual`` removed); None in
            replicas that receive precomputed class embeddings.
        tokenizer: the text tower's tokenizer.
    """

    def __init__(
        self,
        config: ZegOTConfig,
        visual: VisionTransformer,
        prompts: PromptContexts,
        align: DeepAlignment,
        *,
        text: CLIP | None = None,
        tokenizer: Tokenizer | None = None,
    ):
        super().__init__(text=text, tokenizer=tokenizer)
        self.config = config
        self.visual = visual
        self.prompts = prompts
        self.align = align
        depth = len(visual.transformer.resblocks)
        self.layer_indices = resolve_layers(config.layers, depth)
        self._token_cache: dict[tuple[str, ...], torch.Tensor] = {}

    default_templates: tuple[str, ...] = ("{}",)  # learned contexts replace templates
    learns_text_prompts = True  # training re-encodes the vocabulary every step (MaskLogits)

    @property
    def clip_visual(self) -> nn.Module:
        """The frozen open_clip ViT (checkpoints embed it under ``clip.visual.*``)."""
        return self.visual

    def train(self, mode: bool = True) -> ZegOT:
        """Switch trainable parts; the frozen CLIP towers always stay in eval mode."""
        super().train(mode)
        self.visual.eval()
        if self.text is not None:
            self.text.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Prompt contexts and alignment: what training changes and checkpoints store."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(TRAINABLE_PREFIXES)}

    def encode_vocabulary(
        self, names: Sequence[str], templates: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Class names to (C, N, D) float32 embeddings, one L2-normalised row per context set.

        Differentiable in train mode (``model.train()``, grad enabled): training calls it every
        step so the contexts learn through it (tokenisation is cached per name list). In eval
        mode it runs without autograd, so callers such as :mod:`zegclip.labeler` get a plain
        tensor; ``torch.inference_mode()`` around it is fine too.

        Args:
            names: C class names.
            templates: ignored (learned contexts replace templates); a warning is logged when
                anything but :attr:`default_templates` is passed.

        Raises:
            RuntimeError: the text tower was dropped.
        """
        if self.text is None or self.tokenizer is None:
            raise RuntimeError("this replica has no text tower; pass precomputed embeddings")
        if templates is not None and tuple(templates) != self.default_templates:
            logger.warning("ZegOT uses its learned prompt contexts; templates are ignored")
        key = tuple(names)
        if key not in self._token_cache:
            self._token_cache[key] = self.prompts.tokenize(self.tokenizer, names)
        tokens = self._token_cache[key].to(self.text.token_embedding.weight.device)
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            return self.prompts.encode(self.text, tokens)

    @torch.no_grad()
    def encode_layers(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Frozen ViT tokens of the aligned blocks, through ``ln_post`` + ``proj``.

        Args:
            images: (B, 3, H, W) ImageNet-normalised, H and W multiples of the patch size.

        Returns:
            per aligned block: global (B, D) and patches (B, D, h, w), L2-normalised over D.
        """
        v = self.visual
        x, (h, w) = embed_tokens(v, images, bilinear_positional)
        _, blocks = v.transformer.forward_intermediates(
            x, indices=list(self.layer_indices), stop_early=True
        )
        out = []
        for tokens in blocks:
            y = v.ln_post(tokens) @ v.proj  # (B, 1 + h*w, D)
            patches = y[:, 1:].transpose(1, 2).reshape(y.shape[0], -1, h, w)
            out.append((F.normalize(y[:, 0], dim=-1), F.normalize(patches, dim=1)))
        return out

    def mask_logits(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid class logits at patch resolution.

        Args:
            images: (B, 3, H, W) ImageNet-normalised crops.
            text_emb: (C, N, D) from :meth:`encode_vocabulary`.

        Returns:
            (B, C, H/patch, W/patch) float32 logits (trainable with focal + dice on sigmoid).

        Raises:
            ValueError: ``text_emb`` is not (C, N, D) with this model's N.
        """
        n = self.prompts.num_prompts
        if text_emb.ndim != 3 or text_emb.shape[1] != n:
            shape = tuple(text_emb.shape)
            raise ValueError(f"ZegOT needs (C, {n}, D) class embeddings, got {shape}")
        text_emb = text_emb.to(images.device)
        scores = [
            self._layer_score(i, g, p, text_emb)
            for i, (g, p) in enumerate(self.encode_layers(images))
        ]
        return self.align.combine(scores, n)

    def _layer_score(
        self, layer: int, global_emb: torch.Tensor, patches: torch.Tensor, text_emb: torch.Tensor
    ) -> torch.Tensor:
        """OT-refined score map of one block: (B, C, h, w) in [-N, N]."""
        b, _, h, w = patches.shape
        with torch.autocast(patches.device.type, enabled=False):  # OT needs float32 similarities
            queries = self.align.queries(layer, global_emb.float(), text_emb.float())  # (B,C,N,D)
            sim = torch.einsum("bdp,bcnd->bcpn", patches.flatten(2).float(), queries.float())
            cfg = self.config
            score = prompt_transport_score(
                sim, eps=cfg.sinkhorn_eps, max_iter=cfg.sinkhorn_iters, tol=cfg.sinkhorn_tol
            )  # (B, C, h*w)
        return score.reshape(b, -1, h, w)


def resolve_layers(layers: Sequence[int], depth: int) -> tuple[int, ...]:
    """Block indices (negative = from the end) -> sorted distinct indices in ``[0, depth)``.

    Raises:
        ValueError: an index outside the ViT, or duplicates.
    """
    resolved = [i + depth if i < 0 else i for i in layers]
    if any(not 0 <= i < depth for i in resolved) or len(set(resolved)) != len(resolved):
        raise ValueError(f"aligned layers {tuple(layers)} invalid for a {depth}-block ViT")
    return tuple(sorted(resolved))


def build_zegot(
    config: ZegOTConfig, *, load_clip_weights: bool = True, with_text: bool = True
) -> ZegOT:
    """Build ZegOT in eval mode; both CLIP towers frozen, contexts and alignment trainable.

    Args:
        config: model config.
        load_clip_weights: load CLIP weights from ``config.clip.pretrained``; False when the caller
            loads embedded weights.
        with_text: keep the text tower (needed by :meth:`ZegOT.encode_vocabulary`).
    """
    visual, clip = build_towers(config.clip, load_weights=load_clip_weights)
    check_text_tower(clip)
    prompts = PromptContexts(
        config.num_prompts, config.num_context_tokens, clip.token_embedding.weight.shape[1]
    )
    tokenizer = tokenizer_for(config.clip)
    prompts.init_from_words(clip, tokenizer)
    align = DeepAlignment(visual.proj.shape[1], len(config.layers))
    model = ZegOT(
        config,
        visual,
        prompts,
        align,
        text=clip if with_text else None,
        tokenizer=tokenizer if with_text else None,
    )
    logger.info(
        "ZegOT built: %s trainable parameters (prompts %s, alignment %s)",
        f"{count_trainable(model):,}",
        f"{count_trainable(prompts):,}",
        f"{count_trainable(align):,}",
    )
    return model.eval()
