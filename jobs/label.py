"""Label images with zero-shot semantic segmentation on Ray Data.

Usage::

    python jobs/label.py --vocab vocab.txt --input s3://bucket/images/ --output s3://bucket/labels/
    ray job submit --working-dir . -- python jobs/label.py --vocab v.txt --input ... --output ...

Runs on an embedded local Ray unless ``RAY_ADDRESS`` is set (as ``ray job submit`` does).
S3 endpoint and credentials come only from the standard ``AWS_*`` environment variables.

Exit codes: 0 done; 1 any other failure (e.g. preemption; re-running the same command resumes
from the last finished shard); 2 configuration error (nothing was processed); 3 error rows above
``--max-error-rate`` (outputs are written); 4 lease lost: another run took the output over and
this one stopped writing; 75 skipped, output busy (EX_TEMPFAIL: another live run holds
``--output``; nothing was planned, deleted or written).

One run owns an output at a time (lease ``<output>/_lease.json``, see docs/incremental.md): a
run started while another live run holds the output does nothing and exits 75, or waits for it
with ``--if-busy wait``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python jobs/label.py` puts jobs/, not the repo, on the path
    sys.path.insert(0, str(REPO_ROOT))

from jobs.flags import JobHelpFormatter, add_dataclass_flags  # noqa: E402
from pipeline import lease as leases  # noqa: E402
from pipeline import storage  # noqa: E402
from pipeline.config import (  # noqa: E402
    FIELD_HELP,
    ConfigError,
    LabelJobConfig,
    config_from_mapping,
    load_config_file,
)
from pipeline.run import (  # noqa: E402
    hold_output,
    init_ray,
    plan_job,
    run_label_job,
    shutdown_on_signals,
)

logger = logging.getLogger("jobs.label")

EXIT_CONFIG = 2
EXIT_ERROR_RATE = 3


def build_parser() -> argparse.ArgumentParser:
    """One ``--kebab-case`` flag per ``LabelJobConfig`` field; defaults shown in ``--help``."""
    parser = argparse.ArgumentParser(
        prog="jobs/label.py",
        description=__doc__.split("\n\n")[0],
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override
        formatter_class=JobHelpFormatter,
        epilog="Exit codes: 0 ok; 1 any other failure (re-run the same command to resume);\n"
        "2 configuration error (nothing processed); 3 error rate above --max-error-rate;\n"
        "4 lease lost (another run took --output over); 75 skipped: --output busy (another "
        "live run holds its lease; nothing done).",
    )
    parser.add_argument("--config", help="JSON or YAML file with flag values; flags override it")
    parser.add_argument(
        "--review",
        nargs="?",
        const="",
        metavar="DIR",
        help="after the run, write an HTML review report to local DIR "
        "(default: <output>/report for a local --output); see docs/review.md",
    )
    add_dataclass_flags(
        parser,
        LabelJobConfig,
        FIELD_HELP,
        skip=("class_names",),
        required_note=" (required unless in --config)",
    )
    return parser


def resolve_config(argv: list[str] | None) -> LabelJobConfig:
    """Defaults <- ``--config`` file <- command-line flags.

    Raises:
        ConfigError: unknown keys, missing required values, unreadable config file.
    """
    args = vars(build_parser().parse_args(argv))
    args.pop("review", None)  # a job step, not a config field; see review_dir
    file_values = load_config_file(args.pop("config")) if "config" in args else {}
    return config_from_mapping({**file_values, **args})


def review_dir(argv: list[str] | None, cfg: LabelJobConfig) -> str | None:
    """Report folder for ``--review [DIR]``, or None without the flag.

    Raises:
        ConfigError: DIR not local, or no DIR while ``--output`` is on an object store.
    """
    target = getattr(build_parser().parse_args(argv), "review", None)
    if target == "":
        if storage.split_uri(cfg.output)[0] != "file":
            raise ConfigError("--review: give a local DIR when --output is on an object store.")
        target = storage.join(storage.split_uri(cfg.output)[1], "report")
    if target is not None and storage.split_uri(target)[0] != "file":
        raise ConfigError(f"--review {target}: the report is written to a local folder.")
    return target


def _zegclip() -> Any:
    """Import the model package lazily: torch takes seconds; ``--help`` should not."""
    import zegclip

    return zegclip


def load_vocab(uri: str) -> Any:
    """``zegclip.Vocabulary`` from a local path or a URI.

    Raises:
        FileNotFoundError: missing file. zegclip.VocabularyError: invalid content.
    """
    parse_vocabulary = _zegclip().vocab.parse_vocabulary
    if storage.split_uri(uri)[0] == "file":
        path = Path(storage.split_uri(uri)[1])
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file {uri} not found; pass --vocab PATH.")
        return parse_vocabulary(
            path.read_text(encoding="utf-8").splitlines(), source=f"--vocab {uri}"
        )
    try:
        text = storage.read_bytes(uri).decode("utf-8")
    except OSError as e:
        raise FileNotFoundError(f"--vocab {uri}: cannot read ({e}).") from e
    return parse_vocabulary(text.splitlines(), source=f"--vocab {uri}")


def make_spec(cfg: LabelJobConfig) -> Any:
    """The model spec from the job config (``--clip-pretrained none`` = random weights)."""
    zegclip = _zegclip()
    pretrained = zegclip.clip.weights_source(cfg.clip_pretrained)
    return zegclip.LabelerSpec(
        checkpoint=cfg.checkpoint,
        clip_model=cfg.clip_model,
        clip_pretrained=pretrained,
        clip_weights=cfg.clip_weights,
        method=cfg.method,
        templates=cfg.templates,
        background=tuple(w.strip() for w in (cfg.background or "").split(",") if w.strip()),
        min_score=cfg.min_score,
        device=cfg.device,
        precision=cfg.precision,
        compile=cfg.compile,
        pamr_precision=cfg.pamr_precision,
    )


def model_callables(spec: Any, vocab: Any) -> tuple[Any, Any, Any]:
    """What the job hands ``run_label_job``: the predictor factory (run once per actor), the
    vocabulary encoder (once per run, on the driver) and the CPU image preparer (decode tasks).
    Tests build the job's predictor from the same spec to check stored masks image by image."""
    zegclip = _zegclip()
    return (
        functools.partial(zegclip.build_predictor, spec, vocab),
        functools.partial(zegclip.encode_vocabulary_for, spec, vocab),
        zegclip.image_preparer(spec),
    )


def _prepare(argv: list[str] | None) -> tuple[LabelJobConfig, Any, Any, dict]:
    """Config, vocabulary, model spec and description; storage is planned under the lease."""
    cfg = resolve_config(argv)
    review_dir(argv, cfg)  # checked before any work
    vocab = load_vocab(cfg.vocab)
    cfg = dataclasses.replace(cfg, class_names=tuple(vocab.names))
    spec = make_spec(cfg)
    _zegclip().check_spec(spec, vocab)
    model = _zegclip().describe(spec)
    return cfg, vocab, spec, model


def _init_local_ray(cfg: LabelJobConfig) -> None:
    if not os.environ.get("RAY_ADDRESS"):  # local workers must import pipeline and zegclip
        paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    init_ray(include_dashboard=cfg.dashboard)


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the process exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg, vocab, spec, model = _prepare(argv)
    except (ConfigError, FileNotFoundError, ValueError) as e:  # VocabularyError is a ValueError
        logger.error("configuration error: %s", e)
        return EXIT_CONFIG
    logger.info("config: %s", json.dumps(cfg.to_dict(), sort_keys=True))
    review = review_dir(argv, cfg)  # validated in _prepare
    # SIGINT/SIGTERM: release the lease, stop the local Ray; finished parts are kept
    with shutdown_on_signals():
        try:
            with hold_output(cfg) as lease:
                return _run(cfg, vocab, spec, model, lease, review)
        except ConfigError as e:
            logger.error("configuration error: %s", e)
            return EXIT_CONFIG
        except leases.OutputBusy as e:
            logger.warning("%s", e)
            return leases.EXIT_BUSY
        except leases.LeaseLost as e:
            logger.error("lease lost: %s (exit %d)", e, leases.EXIT_LEASE_LOST)
            return leases.EXIT_LEASE_LOST


def _run(
    cfg: LabelJobConfig,
    vocab: Any,
    spec: Any,
    model: dict,
    lease: leases.Lease,
    review: str | None,
) -> int:
    plan = plan_job(cfg, model)  # under the lease: no other run changes the output meanwhile
    _init_local_ray(cfg)
    zegclip = _zegclip()
    try:
        factory, encoder, prepare = model_callables(spec, vocab)
        summary = run_label_job(
            cfg,
            factory,
            encoder,
            model,
            plan=plan,
            prepare_image=prepare,
            lease=lease,
            run_info={"min_score": zegclip.min_score_in_use(spec)},
        )
    except (zegclip.WeightsError, zegclip.CheckpointError) as e:  # raised before any image
        logger.error("configuration error: %s", e)
        return EXIT_CONFIG
    print(summary.table())
    if review is not None:
        from pipeline.review import build_report

        with leases.hold(review, job="review", ttl_s=cfg.lease_ttl, if_busy="wait"):
            print(f"review report: {build_report(cfg.output, review).index}")
    if summary.error_rate > cfg.max_error_rate:
        logger.error(
            "error rate %.3f exceeds --max-error-rate %.3f; see run.json first_errors",
            summary.error_rate,
            cfg.max_error_rate,
        )
        return EXIT_ERROR_RATE
    return 0


if __name__ == "__main__":
    sys.exit(main())
