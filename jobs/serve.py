"""Serve pre-labels to Label Studio: its ML-backend protocol on Ray Serve.

Usage::

    export LABEL_STUDIO_URL=http://label-studio:8080 LABEL_STUDIO_API_KEY=...
    python jobs/serve.py --checkpoint s3://bucket/models/zegclip.safetensors --port 9090

then, in Label Studio, Project settings -> Model -> Connect model: ``http://<this host>:9090``.
Classes come from the project's ``<BrushLabels>``; see docs/serve.md.

Runs on an embedded local Ray unless ``RAY_ADDRESS`` is set. The model flags are the label
job's (same names, defaults and checks). Exit codes: 2 configuration error (nothing started);
otherwise it serves until interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python jobs/serve.py` puts jobs/, not the repo, on the path
    sys.path.insert(0, str(REPO_ROOT))

from jobs.flags import JobHelpFormatter, add_dataclass_flags  # noqa: E402
from jobs.label import make_spec  # noqa: E402
from pipeline.config import ConfigError  # noqa: E402
from pipeline.serve.config import FIELD_HELP, ServeConfig, validate  # noqa: E402

logger = logging.getLogger("jobs.serve")

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    """One ``--kebab-case`` flag per ``ServeConfig`` field; defaults shown in ``--help``."""
    parser = argparse.ArgumentParser(
        prog="jobs/serve.py",
        description=__doc__.split("\n\n")[0],
        argument_default=argparse.SUPPRESS,
        formatter_class=JobHelpFormatter,
        epilog="Exit code 2: configuration error. Environment: LABEL_STUDIO_URL, "
        "LABEL_STUDIO_API_KEY, AWS_* for s3:// images and checkpoints.",
    )
    add_dataclass_flags(parser, ServeConfig, FIELD_HELP)
    return parser


def prepare(argv: list[str] | None) -> tuple[ServeConfig, Any]:
    """Flags -> checked config and ``LabelerSpec``, before any Ray or model work.

    Raises:
        ConfigError, FileNotFoundError, ValueError: the message names the flag to fix.
    """
    cfg = ServeConfig(**vars(build_parser().parse_args(argv)))
    validate(cfg)
    from pipeline.serve.fetch import UrlPolicy

    UrlPolicy.from_flags(
        cfg.allowed_hosts, cfg.allowed_buckets, os.environ.get("LABEL_STUDIO_URL") or None
    )
    import zegclip

    spec = make_spec(cfg)
    zegclip.check_spec(spec)
    return cfg, spec


def num_gpus(cfg: ServeConfig) -> float:
    """``--num-gpus-per-replica`` or, unset, 1 if the connected Ray cluster has GPUs, else 0."""
    if cfg.num_gpus_per_replica is not None:
        return cfg.num_gpus_per_replica
    from pipeline.run import cluster_gpus

    return 1.0 if cluster_gpus() > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    """Validate, start Ray Serve and block; returns the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg, spec = prepare(argv)
    except (ConfigError, FileNotFoundError, ValueError) as e:  # WeightsError etc. too
        logger.error("configuration error: %s", e)
        return EXIT_CONFIG
    logger.info("config: %s", json.dumps(dataclasses.asdict(cfg), sort_keys=True))
    return _serve(cfg, spec)


def _serve(cfg: ServeConfig, spec: Any) -> int:
    from ray import serve

    from pipeline.local_ray import shutdown_on_signals
    from pipeline.run import init_ray
    from pipeline.serve.deployment import APP_NAME, application

    if not os.environ.get("RAY_ADDRESS"):  # local replicas must import pipeline and zegclip
        paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    with shutdown_on_signals():
        init_ray()
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        app = application(cfg, spec, num_gpus(cfg))
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
