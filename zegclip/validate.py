"""Driver-side checks of model settings: names, file formats and tensor shapes, never a model build.

Jobs call these before any cluster or worker starts, so a typo costs a second, not an actor pool.
Each check reads at most a file header (safetensors) or memory-maps a ``torch.save`` zip with
``weights_only=True``; every error message starts with the flag to fix. What cannot be seen in
advance (a file that becomes unreadable later, a failing GPU) still fails at run time.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import open_clip  # zegclip/__init__ makes torchvision importable first
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from safetensors import safe_open

from zegclip.clip import WeightsError, model_name
from zegclip.devices import PRECISIONS as DEVICE_PRECISIONS
from zegclip.io.checkpoint import CLIP_PREFIX, FORMAT_TAG, CheckpointError, is_safetensors
from zegclip.io.convert import infer_config, map_official_keys
from zegclip.io.hub import pretrained_problem
from zegclip.io.registry import FAMILY_LOADERS, OFFICIAL_SUFFIXES, local_path
from zegclip.models.trainfree.model import RECIPES
from zegclip.models.zegclip.config import ZegCLIPConfig
from zegclip.models.zegot.config import ZegOTConfig
from zegclip.templates import resolve_templates
from zegclip.text import flat_names
from zegclip.vocab import Vocabulary, parse_vocabulary
from zegclip.weights import redact_uri

PRECISIONS = ("auto", *DEVICE_PRECISIONS)
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
FAMILY_CONFIGS: dict[str, type] = {"zegclip": ZegCLIPConfig, "zegot": ZegOTConfig}
# Shape checks a CLIP weights file must pass; None matches any size (open_clip resizes
# positional embeddings to the configured grid and context length).
_REQUIRED_CLIP_KEYS = ("visual.conv1.weight", "token_embedding.weight", "positional_embedding")


def check_choice(value: str, choices: Iterable[str], flag: str) -> None:
    """Raises ValueError unless ``value`` is one of ``choices`` (listed in the message)."""
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"{flag} {value!r}: choose one of {', '.join(options)}.")


def check_device(device: str, flag: str = "--device") -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; CUDA must be present when named.

    Raises:
        ValueError: any other value, or CUDA requested on a machine without it.
    """
    if not DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"{flag} {device!r}: choose one of auto, cpu, cuda (or cuda:N).")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{flag} {device} requested but CUDA is not available here.")


def check_fraction(value: float | None, flag: str) -> None:
    """Raises ValueError unless ``value`` is None or within [0, 1] (NaN is refused)."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{flag} must be within [0, 1], got {value}.")


def check_method(method: str, flag: str = "--method") -> None:
    """Raises ValueError unless ``method`` names a training-free recipe (listed in the message)."""
    check_choice(method, sorted(RECIPES), flag)


def supported_clip_models() -> list[str]:
    """open_clip model names whose config builds a plain ViT ``CLIP`` (what every family needs)."""
    return [m for m in open_clip.list_models() if _is_vit_clip(open_clip.get_model_config(m))]


def _is_vit_clip(cfg: Mapping[str, Any] | None) -> bool:
    if not cfg or "vision_cfg" not in cfg or "text_cfg" not in cfg or "embed_dim" not in cfg:
        return False
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    return (
        isinstance(vision.get("layers", 12), int)
        and not vision.get("timm_model_name")
        and not text.get("hf_model_name")
        and not cfg.get("custom_text")
        and "multimodal_cfg" not in cfg
    )


def check_clip_model(model: str, flag: str = "--clip-model") -> dict[str, Any]:
    """The open_clip config of ``model`` (a name or the path of a config JSON).

    Raises:
        ValueError: unknown name (close matches and all supported names listed), unreadable
            JSON, or an architecture that is not a ViT CLIP.
    """
    if model.endswith(".json"):
        cfg = _json_config(model, flag)
    else:
        cfg = open_clip.get_model_config(model)
        if cfg is None:
            names = supported_clip_models()
            close = get_close_matches(model, names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"{flag} {model!r}: unknown CLIP model.{hint} Choose one of {', '.join(names)}, "
                "or pass the path of an open_clip model config JSON."
            )
    if not _is_vit_clip(cfg):
        raise ValueError(
            f"{flag} {model}: not a ViT CLIP (needs embed_dim, vision_cfg with a ViT and an "
            "open_clip text_cfg; timm, Hugging Face and ResNet towers are not supported)."
        )
    return cfg


def _json_config(path: str, flag: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"{flag} {path}: no such CLIP config file.")
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{flag} {path}: not a readable open_clip config JSON ({e}).") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{flag} {path}: expected a JSON object (an open_clip model config).")
    return cfg


def check_clip_source(
    model: str, source: str | None, flag: str, *, without_weights: str | None = None
) -> None:
    """A pretrained tag of ``model`` (cached here or downloadable), a weights file/URI that fits
    it, or None (random weights).

    Args:
        without_weights: the flags of a run without weights, named in the advice (default
            ``<flag> none``).

    Raises:
        ValueError: an unknown tag (the model's tags are listed). WeightsError: see
            :func:`check_pretrained_available` and :func:`check_clip_weights`.
    """
    if source is None or source.lower() in ("", "none"):
        return
    name = model_name(model)
    if open_clip.is_pretrained_cfg(name, source):
        check_pretrained_available(model, source, flag, without_weights or f"{flag} none")
        return
    if "://" in source or "/" in source or Path(source).expanduser().is_file():
        check_clip_weights(source, model, flag=flag)
        return
    tags = open_clip.list_pretrained_tags_by_model(name)
    choices = ", ".join([*tags, "none"])
    raise ValueError(
        f"{flag} {source!r}: not a pretrained tag of {model}; choose one of {choices}, "
        "or give a weights file (--clip-weights on offline machines)."
    )


def check_pretrained_available(model: str, tag: str, flag: str, without_weights: str) -> None:
    """The weights of pretrained ``tag`` are cached here or the hub answers (one short probe).

    Raises:
        WeightsError: neither; the message names ``--clip-weights`` and ``without_weights``.
    """
    problem = pretrained_problem(model_name(model), tag)
    if problem is not None:
        raise WeightsError(
            f"{flag} {tag}: the {model} weights are not cached on this machine and cannot be "
            f"downloaded ({problem}). Offline, pass --clip-weights PATH_OR_URI (the open_clip "
            "weights file on local disk or object storage); to try the pipeline end to end "
            f"without weights, pass {without_weights} (random weights: the labels show the "
            "pipeline working, not the classes)."
        )


def check_clip_weights(source: str, model: str, flag: str = "--clip-weights") -> None:
    """The weights file exists, is safetensors or a ``weights_only`` torch file, and fits ``model``.

    Compares the width/patch/vocabulary shapes and layer counts of the file with the open_clip
    config of ``model``; no tensor data is read.

    Raises:
        FileNotFoundError: missing file. WeightsError: unreadable format or shapes of another
            model. ValueError: ``model`` itself is invalid (names ``--clip-model``).
    """
    cfg = check_clip_model(model)
    file = local_path(source, flag=flag)
    shapes = _clip_shapes(tensor_shapes(file, flag=flag, error=WeightsError))
    problems = clip_shape_problems(shapes, cfg)
    if problems:
        raise WeightsError(
            f"{flag} {redact_uri(source)}: does not fit CLIP model {model} "
            f"({'; '.join(problems[:4])}); pass the weights of that model or the matching "
            "--clip-model."
        )


def _clip_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """open_clip's own normalisation: ``module.`` prefix dropped."""
    if shapes and next(iter(shapes)).startswith("module."):
        return {k.removeprefix("module."): v for k, v in shapes.items()}
    return shapes


def expected_clip_shapes(cfg: Mapping[str, Any]) -> dict[str, tuple[int | None, ...]]:
    """Key shapes of an open_clip ViT CLIP state dict for config ``cfg`` (None = any size)."""
    vision, text = CLIPVisionCfg(**cfg["vision_cfg"]), CLIPTextCfg(**cfg["text_cfg"])
    width, dim, patch = vision.width, cfg["embed_dim"], vision.patch_size
    return {
        "visual.conv1.weight": (width, 3, patch, patch),
        "visual.class_embedding": (width,),
        "visual.positional_embedding": (None, width),
        "visual.proj": (width, dim),
        "token_embedding.weight": (text.vocab_size, text.width),
        "positional_embedding": (None, text.width),
        "text_projection": (text.width, dim),
    }


def clip_shape_problems(shapes: Mapping[str, tuple[int, ...]], cfg: Mapping[str, Any]) -> list[str]:
    """Readable differences between a state dict's shapes and config ``cfg`` (empty = fits)."""
    missing = [k for k in _REQUIRED_CLIP_KEYS if k not in shapes]
    if missing:
        return [f"not an open_clip CLIP state dict: no {', '.join(missing)}"]
    problems = [
        f"{key} is {tuple(shapes[key])}, expected {_shown(want)}"
        for key, want in expected_clip_shapes(cfg).items()
        if key in shapes and not _fits(shapes[key], want)
    ]
    layers = {
        "vision": (r"visual\.transformer\.resblocks\.(\d+)\.", cfg["vision_cfg"].get("layers", 12)),
        "text": (r"transformer\.resblocks\.(\d+)\.", cfg["text_cfg"].get("layers", 12)),
    }
    for tower, (pattern, want) in layers.items():
        got = len({m.group(1) for k in shapes if (m := re.match(pattern, k))})
        if got != want:
            problems.append(f"{got} {tower} layers, expected {want}")
    return problems


def _fits(shape: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    return len(shape) == len(want) and all(w is None or s == w for s, w in zip(shape, want))


def _shown(want: tuple[int | None, ...]) -> str:
    sizes = ["any" if w is None else str(w) for w in want]
    return f"({', '.join(sizes)}{',' if len(sizes) == 1 else ''})"


def tensor_shapes(
    file: Path, *, flag: str, error: type[Exception] = CheckpointError
) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors or ``torch.save`` file, reading no data.

    The format is told by the file's bytes, not its name (a converted checkpoint may be called
    ``model``).

    Raises:
        ``error``: the file is neither (its message names ``flag``).
    """
    if file.suffix == ".safetensors" or is_safetensors(file):
        try:
            with safe_open(str(file), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # safetensors raises its own SafetensorError and OSError types
            raise error(f"{flag} {file}: not a readable safetensors file ({e}).") from e
    return {k: tuple(v.shape) for k, v in torch_tensors(file, flag=flag, error=error).items()}


def torch_tensors(
    file: Path, *, flag: str, error: type[Exception] = CheckpointError
) -> dict[str, torch.Tensor]:
    """Tensors of a ``torch.save`` file, memory-mapped when it is a zip (no data read).

    Unwraps a ``state_dict`` entry and a ``module.`` prefix, as the loaders do.

    Raises:
        ``error``: not loadable with ``weights_only=True``, or no tensors in it.
    """
    try:
        blob = torch.load(
            str(file), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file)
        )
    except Exception as e:  # pickle and zip errors surface as several types
        raise error(
            f"{flag} {file}: not a safetensors file nor loadable with "
            f"torch.load(weights_only=True) ({type(e).__name__})."
        ) from e
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    tensors = {
        str(k).removeprefix("module."): v
        for k, v in (state or {}).items()
        if isinstance(v, torch.Tensor)
    }
    if not tensors:
        raise error(f"{flag} {file}: holds no state_dict of tensors.")
    return tensors


def check_checkpoint(source: str, flag: str = "--checkpoint") -> None:
    """Our ``.safetensors`` (header, family, config) or an official ``.pth`` (keys, shapes).

    Raises:
        FileNotFoundError: missing file. CheckpointError: not a usable checkpoint.
    """
    file = local_path(source, flag=flag)
    if file.suffix in OFFICIAL_SUFFIXES:
        _check_official(file, flag)
    else:
        _check_ours(file, flag)


def _check_official(file: Path, flag: str) -> None:
    state = torch_tensors(file, flag=flag)
    try:
        map_official_keys(state)
        infer_config(state)
    except (CheckpointError, ValueError, IndexError) as e:
        raise CheckpointError(f"{flag} {file}: {e}") from e


def _check_ours(file: Path, flag: str) -> None:
    shapes = tensor_shapes(file, flag=flag)
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{flag} {file}: not a zegclip checkpoint (no '{FORMAT_TAG}' header); official "
            f"ZegCLIP checkpoints end in {' or '.join(OFFICIAL_SUFFIXES)}."
        )
    try:
        data = json.loads(meta["zegclip_config"])
        family = data.get("family", "zegclip")
        check_choice(family, sorted(FAMILY_LOADERS), f"{flag} {file}: model family")
        config = FAMILY_CONFIGS[family].from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{flag} {file}: unusable model config in its header ({e}).") from e
    if not any(not k.startswith(CLIP_PREFIX) for k in shapes):
        raise CheckpointError(f"{flag} {file}: holds no trained weights.")
    if config.clip.config is None:
        check_clip_model(config.clip.model, flag=f"{flag} {file}: its CLIP model")


def check_templates(templates: str | None, flag: str = "--templates") -> None:
    """A template set name or a file of templates, each with a ``{}``; None = model default.

    Raises:
        ValueError: unknown set, missing file or a template without a placeholder.
    """
    if templates is None:
        return
    try:
        resolve_templates(templates)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{flag} {templates}: {e}") from e


def check_background(
    words: Iterable[str], vocab: Vocabulary | None = None, flag: str = "--background"
) -> None:
    """Background words: valid names, no repeats, none equal to a vocabulary name or synonym.

    Raises:
        ValueError: the offending word is named.
    """
    words = list(words)
    if not words:
        return
    parse_vocabulary([", ".join(words)], source=flag)  # empty, over-long or repeated words
    if vocab is not None:
        names = {n.casefold() for n in flat_names(vocab)}
        clash = [w for w in words if w.casefold() in names]
        if clash:
            raise ValueError(
                f"{flag}: {', '.join(clash)} also in the vocabulary; a word is either a class "
                "or background, not both."
            )
