"""Can open_clip get a pretrained tag's weights here? Local caches first, then one short probe.

open_clip downloads a tag's weights when a model is built, on the workers; offline, Hugging Face's
client retries for most of a minute before it gives up. The driver asks here first, in about a
second: the file is in the Hugging Face cache (or ``~/.cache/clip`` for URL-only tags), or one
request with a short timeout reaches the hub. ``HF_HUB_OFFLINE=1`` means no request at all.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import open_clip
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

PROBE_TIMEOUT_S = 5.0
_TRUE = {"1", "on", "true", "yes"}


def pretrained_problem(model: str, tag: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the weights of open_clip ``model`` / pretrained ``tag`` cannot be had, or None.

    None when they are cached locally or the hub answered the probe.

    Args:
        model: an open_clip model name (registered).
        tag: one of its pretrained tags.
        timeout: seconds the single probe request may take.
    """
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if cfg.get("file"):
        return None if Path(cfg["file"]).is_file() else f"{cfg['file']} is missing"
    if _cached(cfg):
        return None
    if _offline():
        return "HF_HUB_OFFLINE is set"
    return _probe(cfg, timeout)


def _hub_files(cfg: dict) -> tuple[str, list[str]]:
    """(repo id, candidate file names, safetensors first) of an ``hf_hub`` entry."""
    repo_id, filename = os.path.split(cfg["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        return repo_id, [HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth")):
        return repo_id, [filename[:-4] + ".safetensors", filename]
    return repo_id, [filename]


def _cached(cfg: dict) -> bool:
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, names = _hub_files(cfg)
        if any(isinstance(try_to_load_from_cache(repo_id, n), str) for n in names):
            return True
    url = cfg.get("url")
    return bool(url) and (Path.home() / ".cache" / "clip" / os.path.basename(url)).is_file()


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def _probe(cfg: dict, timeout: float) -> str | None:
    """One request, no retries: the hub's metadata of the first candidate file, else the URL."""
    try:
        if cfg.get("hf_hub"):
            from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

            repo_id, names = _hub_files(cfg)
            endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
            url = hf_hub_url(repo_id, names[-1], endpoint=endpoint)
            get_hf_file_metadata(url, timeout=timeout)
        else:
            request = urllib.request.Request(cfg["url"], method="HEAD")
            urllib.request.urlopen(request, timeout=timeout).close()
    except Exception as e:  # no network, DNS, proxy, HTTP errors: all mean "not from here"
        return f"{type(e).__name__}: {str(e)[:120]}"
    return None
