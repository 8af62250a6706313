"""Class-name embeddings from CLIP's frozen text tower.

Each (name, template) prompt is encoded and L2-normalised; a name's embedding is the mean over
templates, renormalised (ZegCLIP's get_embedding.ipynb recipe; a single template reduces to the
plain normalised embedding). Synonyms are encoded as separate rows; models score every row and
reduce to classes with a max over a class's synonyms (:mod:`zegclip.predictor`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import text_global_pool

from zegclip.vocab import Vocabulary

Tokenizer = Callable[[list[str]], torch.Tensor]


@torch.no_grad()
def encode_names(
    clip: CLIP,
    tokenizer: Tokenizer,
    names: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Encode class names with prompt templates.

    Args:
        clip: open_clip CLIP whose text tower is used.
        tokenizer: its tokenizer.
        names: N class names.
        templates: prompts containing ``{}``.
        batch_size: prompts per text-tower forward (bounds memory for 80-template sets).

    Returns:
        (N, D) float32, L2-normalised rows, on the text tower's device.
    """
    device = clip.token_embedding.weight.device
    prompts = [t.format(name) for name in names for t in templates]
    tokens = tokenizer(prompts).to(device)  # (P, context)
    # Prompts of similar length share a batch, so each batch stops at its own longest prompt.
    order = torch.argsort(_pool_positions(clip, tokens), stable=True)
    per_prompt = torch.empty(0)
    for start in range(0, len(prompts), batch_size):
        rows = order[start : start + batch_size]
        encoded = F.normalize(encode_text_truncated(clip, tokens[rows]).float(), dim=-1)
        if start == 0:
            per_prompt = encoded.new_empty((len(prompts), encoded.shape[-1]))
        per_prompt[rows] = encoded
    per_prompt = per_prompt.reshape(len(names), len(templates), -1)  # (N, T, D)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


def encode_text_truncated(clip: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``clip.encode_text(tokens)`` computed only up to the batch's last pooled token.

    CLIP's text tower is causal and pools the end-of-text token, so the positions after it never
    reach the output: running (P, L) tokens with L = the last end-of-text position + 1 gives the
    same (P, D) embeddings as the full 77-token context at a fraction of the cost. Towers that
    are not causal or do not pool a token position run in full.
    """
    if clip.attn_mask is None or clip.text_pool_type not in ("argmax", "eos"):
        return clip.encode_text(tokens)
    length = int(_pool_positions(clip, tokens).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(
        cast_dtype
    )
    x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:length, :length]))
    x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=clip.text_eos_id)
    if clip.text_projection is None:
        return x
    if isinstance(clip.text_projection, torch.nn.Linear):
        return clip.text_projection(x)
    return x @ clip.text_projection


def _pool_positions(clip: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """(P,) index of the token each prompt's embedding is read from (open_clip's rule)."""
    if clip.text_pool_type == "eos":
        return (tokens == clip.text_eos_id).int().argmax(dim=-1)
    return tokens.argmax(dim=-1)  # "argmax": the end-of-text token has the highest id


def encode_with_tower(
    text: CLIP | None,
    tokenizer: Tokenizer | None,
    names: Sequence[str],
    templates: Sequence[str],
) -> torch.Tensor:
    """:func:`encode_names` for a model that may have dropped its text tower.

    Raises:
        RuntimeError: no text tower (an inference replica fed precomputed embeddings).
    """
    if text is None or tokenizer is None:
        raise RuntimeError("this replica has no text tower; pass precomputed embeddings")
    return encode_names(text, tokenizer, names, templates)


def synonym_index(vocab: Vocabulary) -> np.ndarray:
    """(S,) int64 class index of every synonym row, in the order :func:`flat_names` lists them."""
    return np.repeat(np.arange(len(vocab)), [len(s) for s in vocab.synonyms])


def flat_names(vocab: Vocabulary) -> list[str]:
    """All S synonyms, class by class."""
    return [name for entry in vocab.synonyms for name in entry]


def load_text_embeddings(path: str, num_classes: int) -> torch.Tensor:
    """Precomputed class embeddings from a ``.npy`` file, as the official configs'
    ``load_text_embedding`` (e.g. ``voc12_single.npy``, float16 (20, 512)).

    Returns:
        (C, D) float32, rows L2-normalised.

    Raises:
        ValueError: not a 2-D array with one row per class.
    """
    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or array.shape[0] != num_classes:
        raise ValueError(
            f"{path}: expected ({num_classes}, D) class embeddings, got shape {array.shape}"
        )
    return F.normalize(torch.from_numpy(array.astype(np.float32)), dim=-1)
