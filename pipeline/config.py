"""``LabelJobConfig``: every knob of the labelling job, one field per ``--kebab-case`` flag.

Defaults live here (and only here); ``jobs/label.py`` builds its ``--help`` from ``FIELD_HELP``.
Credentials and endpoints are never part of the config: they come from the environment
(see ``pipeline.storage``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import storage


class ConfigError(ValueError):
    """Invalid job configuration; the message says what to change. Exit code 2."""


@dataclass(frozen=True)
class LabelJobConfig:
    """Resolved configuration of one labelling run (see ``FIELD_HELP`` for each field)."""

    input: str
    output: str
    vocab: str
    class_names: tuple[str, ...] = ()  # filled in by jobs/label.py from the vocabulary file
    batch_size: int = 16
    concurrency: str = "auto"
    num_gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    num_cpus_per_actor: float = 0.5  # small, so read/decode tasks always find a CPU
    actor_threads: int | None = None  # None: 2 on a GPU actor, 1 on a CPU one
    shard_size: int = 256
    image_column: str | None = None
    max_image_pixels: int = 89_478_485  # PIL's own decompression-bomb threshold
    min_score: float | None = None
    templates: str | None = None
    background: str | None = None
    overwrite: bool = False
    retry_errors: bool = False
    include: str | None = None
    exclude: str | None = None
    max_error_rate: float = 0.1
    limit: int | None = None
    checkpoint: str | None = None
    clip_model: str = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    clip_weights: str | None = None
    method: str = "naclip"
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    pamr_precision: str = "fp32"
    dashboard: bool = False
    if_busy: str = "exit"
    wait_timeout: float = 3600.0
    lease_ttl: float = 300.0

    @property
    def actor_pool_size(self) -> tuple[int, int] | None:
        """``(min_size, max_size)`` parsed from ``concurrency``; None for ``auto``."""
        return None if self.concurrency == AUTO_CONCURRENCY else parse_concurrency(self.concurrency)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of all fields; URIs lose any ``user:password@`` part."""
        out = {k: _redact(v) for k, v in dataclasses.asdict(self).items()}
        out["class_names"] = list(self.class_names)
        return out


def _redact(value: Any) -> Any:
    """Drop userinfo and query strings from URI values (they may carry credentials)."""
    if not isinstance(value, str) or "://" not in value:
        return value
    scheme, rest = value.split("://", 1)
    host, sep, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}{sep}{path.split('?', 1)[0]}"


FIELD_HELP: dict[str, str] = {
    "input": "input URI: folder/prefix or glob of images, .tar shards or .parquet files "
    "(local, s3://, gs://)",
    "output": "output URI (folder/prefix); must not lie inside the input",
    "vocab": "vocabulary file: one class per line, comma-separated synonyms",
    "batch_size": "images per model call",
    "concurrency": "model actors: 'N', 'MIN,MAX' for an autoscaling pool, or 'auto' (one per "
    "--num-gpus-per-actor share of the cluster's GPUs, 1 without GPUs)",
    "num_gpus_per_actor": "GPUs per model actor, fractional allowed (default: 1 if the "
    "cluster has GPUs, else 0)",
    "num_cpus_per_actor": "CPUs reserved per model actor; keep small so decode tasks can run",
    "actor_threads": "batches each model actor works on at once, each thread on its own CUDA "
    "stream, so one batch's copy back and packing overlap the next one's GPU work; roughly "
    "doubles activation memory at 2 (default: 2 on a GPU actor, 1 on a CPU one, where threads "
    "only share the same cores); see docs/gpu.md",
    "shard_size": "loose images per read task, and rows per output Parquet file",
    "image_column": "image column of Parquet inputs (default: auto-detect a binary or "
    "{bytes, path} column)",
    "max_image_pixels": "images with more pixels become error rows (decompression-bomb guard)",
    "min_score": "pixels whose best score is below this are unlabelled (default: model's)",
    "templates": "prompt template set or file (default: model's)",
    "background": "comma-separated background words; pixels they win become unlabelled",
    "overwrite": "redo every image, deleting earlier outputs under --output",
    "retry_errors": "also relabel images whose existing row is an error (the new row replaces it)",
    "include": "comma-separated globs (path relative to the input root, or file name) an input "
    "file must match, e.g. '*.jpg,*.png' (default: all files)",
    "exclude": "comma-separated globs of input files to leave out, e.g. 'tmp/*,*.txt'",
    "max_error_rate": "exit with code 3 when the fraction of error rows exceeds this",
    "limit": "process about this many of the images still to do (whole shards, listing order)",
    "checkpoint": "trained checkpoint URI (default: training-free --method)",
    "clip_model": "open_clip model name (e.g. ViT-B-16), or the path of an open_clip model "
    "config JSON",
    "clip_pretrained": "open_clip pretrained tag of --clip-model; 'none' = random weights, to "
    "see the pipeline work without weights (add --min-score 0, or every pixel is unlabelled)",
    "clip_weights": "open_clip weights file, local or URI, instead of downloading "
    "--clip-pretrained (offline machines; the tag still picks the activation)",
    "method": "training-free variant used without --checkpoint",
    "device": "'auto', 'cuda' or 'cpu'",
    "precision": "model precision: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16",
    "compile": "torch.compile the model forward, warmed up once per actor (GPU)",
    "pamr_precision": "fp32 (the papers') or compute: NACLIP's PAMR runs in --precision on CUDA "
    "(bf16/fp16 masks, float32 sums; docs/gpu.md)",
    "dashboard": "start the Ray dashboard web UI with the embedded local Ray (ignored when "
    "RAY_ADDRESS is set)",
    "if_busy": "when another live run holds --output's lease: 'exit' (code 75, nothing done) or "
    "'wait' for it (up to --wait-timeout); see docs/incremental.md",
    "wait_timeout": "seconds --if-busy wait waits for the lease before exiting with code 75",
    "lease_ttl": "seconds without renewal after which a run's lease on --output is stale and "
    "the next run takes it over (renewed every TTL/4)",
}

REQUIRED = ("input", "output", "vocab")


AUTO_CONCURRENCY = "auto"


def parse_concurrency(text: str) -> tuple[int, int]:
    """Parse "N" or "MIN,MAX" into ``(min_size, max_size)``.

    Raises:
        ConfigError: not one or two positive integers, or MIN > MAX.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        sizes = [int(p) for p in parts]
    except ValueError as e:
        raise ConfigError(f"--concurrency {text!r}: use 'N' or 'MIN,MAX', e.g. '1,4'.") from e
    if len(sizes) not in (1, 2) or min(sizes) < 1 or sizes[0] > sizes[-1]:
        raise ConfigError(f"--concurrency {text!r}: use 'N' or 'MIN,MAX' with 1 <= MIN <= MAX.")
    return sizes[0], sizes[-1]


def config_from_mapping(values: Mapping[str, Any]) -> LabelJobConfig:
    """Build a config from a flat mapping; keys may use ``-`` or ``_``.

    Raises:
        ConfigError: unknown keys or missing required ones.
    """
    names = {f.name for f in dataclasses.fields(LabelJobConfig)}
    clean = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(clean) - names)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; valid keys: {sorted(names)}.")
    missing = [k for k in REQUIRED if not clean.get(k)]
    if missing:
        flags = ", ".join(f"--{k}" for k in missing)
        raise ConfigError(f"missing {flags}; give it on the command line or in --config.")
    if "class_names" in clean:
        clean["class_names"] = tuple(clean["class_names"])
    return LabelJobConfig(**{name: _typed(name, value) for name, value in clean.items()})


# annotation base -> accepted Python types of values from a config file
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "tuple[str, ...]": (tuple,),
}


def _typed(name: str, value: Any) -> Any:
    """A config-file value checked against its field's type; numbers for text fields become text
    (YAML reads ``concurrency: 4`` as an int), ``true`` for a number is refused.

    Raises:
        ConfigError: a value of another type, naming the flag.
    """
    annotation = str(LabelJobConfig.__dataclass_fields__[name].type)
    if value is None and "None" in annotation:
        return value
    base = annotation.split("|")[0].strip()
    if base == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    accepted = _TYPES[base]
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
        raise ConfigError(f"--{name.replace('_', '-')}: expected {base}, got {value!r}.")
    return value


def load_config_file(path: str) -> dict[str, Any]:
    """Read a flat JSON or YAML config file into a dict.

    Raises:
        ConfigError: missing file, parse error or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: file not found.")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml and json raise different types; both mean "fix the file"
        raise ConfigError(f"--config {path}: cannot parse ({e}).") from e
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values.")
    return data


def validate(cfg: LabelJobConfig) -> None:
    """Check values that need no I/O.

    Raises:
        ConfigError: with the flag to fix.
    """
    cfg.actor_pool_size  # noqa: B018 - parses and raises on bad values
    _check(cfg.batch_size >= 1, "--batch-size must be >= 1.")
    _check(cfg.shard_size >= 1, "--shard-size must be >= 1.")
    _check(0 < cfg.num_cpus_per_actor < math.inf, "--num-cpus-per-actor must be > 0 and finite.")
    gpus = cfg.num_gpus_per_actor
    _check(gpus is None or 0 <= gpus < math.inf, "--num-gpus-per-actor must be >= 0 and finite.")
    _check(
        cfg.actor_threads is None or cfg.actor_threads >= 1,
        "--actor-threads must be >= 1 (1 = one batch at a time per actor).",
    )
    _check(0.0 <= cfg.max_error_rate <= 1.0, "--max-error-rate must be in [0, 1].")
    _check(cfg.limit is None or cfg.limit >= 1, "--limit must be >= 1.")
    _check(cfg.max_image_pixels >= 1, "--max-image-pixels must be >= 1.")
    _check(len(cfg.class_names) >= 1, "the vocabulary is empty; write one class per line.")
    _check(cfg.device in ("auto", "cuda", "cpu"), "--device must be auto, cuda or cpu.")
    _check(
        cfg.precision in ("auto", "fp32", "bf16", "fp16"),
        "--precision must be auto, fp32, bf16 or fp16.",
    )
    _check(cfg.pamr_precision in ("fp32", "compute"), "--pamr-precision must be fp32 or compute.")
    _check(cfg.if_busy in ("exit", "wait"), "--if-busy must be exit or wait.")
    _check(0 <= cfg.wait_timeout < math.inf, "--wait-timeout must be >= 0 seconds and finite.")
    _check(1 <= cfg.lease_ttl < math.inf, "--lease-ttl must be >= 1 second and finite.")
    if storage.is_within(cfg.output, cfg.input):
        raise ConfigError(
            f"--output {cfg.output} lies inside --input {cfg.input}; outputs would be read back "
            "as inputs. Choose an output outside the input prefix."
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


__all__ = [
    "FIELD_HELP",
    "ConfigError",
    "LabelJobConfig",
    "config_from_mapping",
    "load_config_file",
    "parse_concurrency",
    "validate",
]
