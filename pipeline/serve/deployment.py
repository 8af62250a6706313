"""The Ray Serve deployment: a :class:`Backend` per replica with the FastAPI protocol app.

``jobs/serve.py`` runs it from flags; KubeRay's RayService imports
``pipeline.serve.deployment:build`` with the same flag names as ``args`` (see
``infra/rayservice-serve.yaml``).
"""

from __future__ import annotations

from typing import Any

from ray import serve

from pipeline.serve.app import build_app
from pipeline.serve.backend import Backend
from pipeline.serve.config import ServeConfig

APP_NAME = "zegclip-labeler"


@serve.deployment(name="LabelStudioBackend", max_ongoing_requests=64)
@serve.ingress()
class LabelStudioBackend(Backend):
    """One replica: predictors on its device, requests batched by ``serve.batch``."""

    def __serve_build_asgi_app__(self) -> Any:
        return build_app(self)


def application(cfg: ServeConfig, spec: Any, num_gpus: float) -> serve.Application:
    """The bound app: ``--num-replicas`` replicas with ``num_gpus`` GPUs each."""
    options = {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": num_gpus}
    deployment = LabelStudioBackend.options(
        num_replicas=cfg.num_replicas, ray_actor_options=options
    )
    return deployment.bind(cfg, spec)


# Flags a RayService may leave to the label job's ConfigMap (infra/params.yaml).
ENV_FLAGS = {"checkpoint": "CHECKPOINT", "clip_weights": "CLIP_WEIGHTS"}


def build(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run`` / RayService: ``args`` are flag names and values;
    ``checkpoint`` / ``clip_weights`` default to ``$CHECKPOINT`` / ``$CLIP_WEIGHTS`` when set.

    Raises:
        ValueError: invalid settings (the same checks, and messages, as ``jobs/serve.py``).
    """
    import os

    from jobs.serve import num_gpus, prepare  # the repository root is the working directory

    from_env = {k: os.environ[v] for k, v in ENV_FLAGS.items() if os.environ.get(v)}
    argv = []
    for key, value in {**from_env, **args}.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv.append(f"{flag}={value}")
    cfg, spec = prepare(argv)
    return application(cfg, spec, num_gpus(cfg))
