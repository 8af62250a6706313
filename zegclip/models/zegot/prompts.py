"""ZegOT's learnable text prompts: N CoOp-style context sets run through CLIP's frozen text tower.

Each class name c gives N prompts ``[SOS] ctx_n,1 .. ctx_n,M  <name tokens> . [EOS]`` whose M
context token embeddings are learned (CoOp, Zhou et al. IJCV 2022) and shared by all classes;
everything else (token and positional embeddings, transformer, ``ln_final``,
``text_projection``) is CLIP's, frozen. Contexts start from the token embeddings of OTSeg's
template prefixes ("a photo of a", "a portrait of a", ...) so that an untrained ZegOT scores like
zero-shot CLIP with N different templates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import nn

from zegclip.text import Tokenizer

# Prefixes of OTSeg's hand-written templates; each is 4 BPE tokens long.
CONTEXT_INIT = (
    "a photo of a",
    "a portrait of a",
    "a part of a",
    "a segment of a",
    "a photo of small",
    "a photo of medium",
    "a photo of large",
    "a background of a",
)
PLACEHOLDER = "X"  # one BPE token; its embeddings are replaced by the learned contexts


class PromptContexts(nn.Module):
    """N sets of M learnable context token embeddings.

    Args:
        num_prompts: N.
        num_context_tokens: M.
        width: the text tower's token width (512 for ViT-B/16's text tower).
    """

    def __init__(self, num_prompts: int, num_context_tokens: int, width: int):
        super().__init__()
        self.contexts = nn.Parameter(torch.empty(num_prompts, num_context_tokens, width))
        nn.init.normal_(self.contexts, std=0.02)  # CoOp's generic init, kept for sets > 8

    @property
    def num_prompts(self) -> int:
        """N."""
        return self.contexts.shape[0]

    @property
    def num_context_tokens(self) -> int:
        """M."""
        return self.contexts.shape[1]

    @torch.no_grad()
    def init_from_words(self, text: CLIP, tokenizer: Tokenizer) -> None:
        """Set context n to the embeddings of ``CONTEXT_INIT[n]``, right-aligned before the name."""
        m = self.num_context_tokens
        for n, phrase in enumerate(CONTEXT_INIT[: self.num_prompts]):
            ids = tokenizer([phrase])[0]
            words = ids[1 : int(ids.argmax())][-m:]  # drop SOS/EOT; keep the last M words
            emb = text.token_embedding(words.to(text.token_embedding.weight.device))
            self.contexts[n, m - len(words) :] = emb.to(self.contexts.dtype)

    def tokenize(self, tokenizer: Tokenizer, names: Sequence[str]) -> torch.Tensor:
        """(C, 77) int64 token ids of ``"X X .. X name."`` (M placeholders).

        Raises:
            ValueError: the tokenizer does not map the placeholder to one token each.
        """
        prefix = " ".join([PLACEHOLDER] * self.num_context_tokens)
        tokens = tokenizer([f"{prefix} {name}." for name in names])
        placeholder = tokenizer([PLACEHOLDER])[0, 1]
        if not bool((tokens[:, 1 : 1 + self.num_context_tokens] == placeholder).all()):
            raise ValueError("the tokenizer splits the context placeholder; cannot place contexts")
        return tokens

    def encode(self, text: CLIP, tokens: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Run every (class, context set) prompt through the frozen text tower.

        Differentiable in the contexts. Only the first ``max(EOT) + 1`` positions are computed:
        CLIP's text attention is causal, so later (padding) positions cannot reach the EOT token.

        Args:
            text: open_clip CLIP with a causal, argmax-pooled text tower.
            tokens: (C, 77) ids from :meth:`tokenize`.
            batch_size: prompts per text-tower forward.

        Returns:
            (C, N, D) float32 embeddings, L2-normalised over D.
        """
        per_chunk = max(1, batch_size // self.num_prompts)
        chunks = [
            self._encode_chunk(text, tokens[start : start + per_chunk])
            for start in range(0, tokens.shape[0], per_chunk)
        ]
        return torch.cat(chunks)

    def _encode_chunk(self, text: CLIP, tokens: torch.Tensor) -> torch.Tensor:
        c, (n, m, width) = tokens.shape[0], self.contexts.shape
        cast = text.transformer.get_cast_dtype()
        eot = tokens.argmax(dim=-1)  # (C,) EOT has the largest id (CLIP BPE)
        length = int(eot.max()) + 1
        tok = text.token_embedding(tokens[:, :length]).to(cast)  # (C, L, W)
        ctx = self.contexts.to(cast).unsqueeze(0).expand(c, n, m, width)
        x = torch.cat(
            [
                tok[:, None, :1].expand(c, n, 1, width),
                ctx,
                tok[:, None, 1 + m :].expand(c, n, length - 1 - m, width),
            ],
            dim=2,
        ).reshape(c * n, length, width)  # (C*N, L, W)
        x = x + text.positional_embedding[:length].to(cast)
        x = text.transformer(x, attn_mask=text.attn_mask[:length, :length])
        x = text.ln_final(x)
        x = x[torch.arange(c * n, device=x.device), eot.repeat_interleave(n)]  # (C*N, W)
        proj = text.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return F.normalize(x.float(), dim=-1).reshape(c, n, -1)


def check_text_tower(text: CLIP) -> None:
    """Raise ValueError unless ``text`` has the causal, argmax-pooled tower contexts rely on."""
    if getattr(text, "attn_mask", None) is None or text.text_pool_type != "argmax":
        raise ValueError(
            "ZegOT prompt contexts need a causal, EOT(argmax)-pooled CLIP text tower "
            f"(got pool '{getattr(text, 'text_pool_type', None)}')"
        )
