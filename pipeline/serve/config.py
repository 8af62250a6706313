"""``ServeConfig``: every knob of the ML backend, one field per ``--kebab-case`` flag.

The model fields carry the label job's names, defaults and help texts (``pipeline.config``), so
``jobs.label.make_spec`` builds the same ``LabelerSpec`` from either config.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from pipeline.config import FIELD_HELP as LABEL_HELP
from pipeline.config import ConfigError

MODEL_FIELDS = (
    "checkpoint",
    "clip_model",
    "clip_pretrained",
    "clip_weights",
    "method",
    "templates",
    "background",
    "min_score",
    "device",
    "precision",
    "compile",
    "pamr_precision",
    "max_image_pixels",
)


@dataclass(frozen=True)
class ServeConfig:
    """Resolved configuration of one backend (see ``FIELD_HELP``)."""

    host: str = "0.0.0.0"
    port: int = 9090
    num_replicas: int = 1
    num_gpus_per_replica: float | None = None  # None: 1 when the cluster has GPUs, else 0
    num_cpus_per_replica: float = 1.0
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.02
    allowed_hosts: str | None = None
    allowed_buckets: str | None = None
    max_image_bytes: int = 64 * 1024 * 1024
    fetch_timeout_s: float = 20.0
    max_projects: int = 4
    max_image_pixels: int = 89_478_485
    min_score: float | None = None
    templates: str | None = None
    background: str | None = None
    checkpoint: str | None = None
    clip_model: str = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    clip_weights: str | None = None
    method: str = "naclip"
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    pamr_precision: str = "fp32"

    def to_dict(self) -> dict:
        """JSON-ready fields (no credentials are ever part of the config)."""
        return dataclasses.asdict(self)


FIELD_HELP: dict[str, str] = {
    **{k: LABEL_HELP[k] for k in MODEL_FIELDS},
    "host": "address the HTTP proxy listens on",
    "port": "HTTP port Label Studio connects to",
    "num_replicas": "model replicas (each holds one predictor per project vocabulary)",
    "num_gpus_per_replica": "GPUs per replica, fractional allowed (default: 1 if the cluster "
    "has GPUs, else 0)",
    "num_cpus_per_replica": "CPUs reserved per replica",
    "max_batch_size": "images per model call, gathered across concurrent requests "
    "(serve.batch); 1 turns batching off",
    "batch_wait_timeout_s": "longest wait for a batch to fill, seconds",
    "allowed_hosts": "comma-separated hosts task image URLs may name (exact, or '*.example.com'); "
    "loopback and link-local addresses only when listed as such (default: the host of "
    "LABEL_STUDIO_URL)",
    "allowed_buckets": "comma-separated s3:// and gs:// buckets task images may come from "
    "('*' = any; default: none)",
    "max_image_bytes": "larger downloads are refused (that task gets an error entry)",
    "fetch_timeout_s": "timeout of one image download, seconds",
    "max_projects": "labelling configs (vocabularies) each replica keeps a predictor for",
}


def validate(cfg: ServeConfig) -> None:
    """Check values that need no I/O.

    Raises:
        ConfigError: with the flag to fix.
    """
    _check(1 <= cfg.port <= 65535, "--port must be within 1..65535.")
    _check(cfg.num_replicas >= 1, "--num-replicas must be >= 1.")
    gpus = cfg.num_gpus_per_replica
    _check(gpus is None or 0 <= gpus < math.inf, "--num-gpus-per-replica must be >= 0 and finite.")
    _check(0 < cfg.num_cpus_per_replica < math.inf, "--num-cpus-per-replica must be > 0.")
    _check(cfg.max_batch_size >= 1, "--max-batch-size must be >= 1.")
    _check(0 <= cfg.batch_wait_timeout_s <= 10, "--batch-wait-timeout-s must be within [0, 10].")
    _check(cfg.max_image_bytes >= 1, "--max-image-bytes must be >= 1.")
    _check(0 < cfg.fetch_timeout_s <= 600, "--fetch-timeout-s must be within (0, 600].")
    _check(cfg.max_projects >= 1, "--max-projects must be >= 1.")
    _check(cfg.max_image_pixels >= 1, "--max-image-pixels must be >= 1.")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
