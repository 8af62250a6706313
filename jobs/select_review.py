"""Choose what people should correct: a review set from a labelling run, exported for a tool.

Usage::

    python jobs/select_review.py RUN --budget 50 --strategy least-confident --output review/ \\
        --export labelstudio

Strategies (see pipeline/selection.py): least-confident, class-balanced (rare classes first),
diverse (k-centre greedy on each image's class composition), random (seeded baseline). Writes::

    DIR/selection.json      strategy, budget, seed, run, chosen ids with their mean confidence
    DIR/selected.jsonl      one {"image_id", "rank", "mean_confidence"} a line
    DIR/run/                a finished labelling run holding only the chosen rows
    DIR/<format>/           with --export: jobs/export.py's output for that run subset

(Named ``select_review.py``, not ``select.py``: ``python jobs/<job>.py`` puts ``jobs/`` first
on ``sys.path``, where a ``select.py`` would shadow the standard library's ``select`` module and
break every job.)

Corrections come back through ``jobs/train.py --data <tool export> --images-from DIR/run``
(or ``--pseudo-labels RUN`` to mix them with the rest of the run). Exit codes: 0 done;
2 configuration error (nothing written).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if (
    str(REPO_ROOT) not in sys.path
):  # `python jobs/select_review.py` puts jobs/, not the repo, on the path
    sys.path.insert(0, str(REPO_ROOT))

from pipeline import selection, storage, write  # noqa: E402
from pipeline.export import options, runner  # noqa: E402

logger = logging.getLogger("jobs.select")

EXIT_CONFIG = 2
EXPORTS = ("labelstudio", "cvat")


def build_parser() -> argparse.ArgumentParser:
    """Flags of the selection job."""
    p = argparse.ArgumentParser(
        prog="jobs/select_review.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="output folder/URI of a finished labelling run")
    p.add_argument("--budget", type=int, required=True, help="images to choose (>= 1)")
    p.add_argument(
        "--strategy", required=True, choices=sorted(selection.STRATEGIES), help="how to choose"
    )
    p.add_argument("--output", required=True, help="review-set folder/URI (not inside RUN)")
    p.add_argument("--export", choices=EXPORTS, help="also export the set for this tool")
    p.add_argument("--seed", type=int, default=0, help="random strategy's seed (default 0)")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="JSONL",
        help="never choose the image ids listed in this file (e.g. an earlier round's "
        "selected.jsonl); repeatable",
    )
    return p


def _check(args: argparse.Namespace) -> dict:
    """run.json of RUN after checking the flags.

    Raises:
        options.OptionError: with the flag to fix.
    """
    if args.budget < 1:
        raise options.OptionError(f"--budget must be >= 1, got {args.budget}")
    if storage.is_within(args.output, args.run):
        raise options.OptionError("--output must not be inside RUN")
    run_file = storage.join(args.run, write.RUN_FILE)
    if not storage.exists(run_file):
        raise options.OptionError(f"RUN {args.run}: no run.json (not a finished labelling run)")
    try:
        if storage.list_files(args.output):
            raise options.OptionError(f"--output {args.output} is not empty; use another folder")
    except FileNotFoundError:
        pass
    return json.loads(storage.read_bytes(run_file))


def _excluded(files: list[str]) -> set[str]:
    ids: set[str] = set()
    for uri in files:
        lines = storage.read_bytes(uri).decode("utf-8").splitlines()
        ids.update(json.loads(line)["image_id"] for line in lines if line.strip())
    return ids


def choose(
    run: str, num_classes: int, strategy: str, budget: int, seed: int, exclude: set[str]
) -> dict:
    """The selection record: strategy, budget, seed, run, and the chosen images in order."""
    pool = selection.without(selection.read_pool(run, num_classes), exclude)
    picks = selection.STRATEGIES[strategy](pool, budget, seed)
    chosen = [
        {"image_id": pool.ids[i], "rank": r, "mean_confidence": round(float(pool.confidence[i]), 6)}
        for r, i in enumerate(picks)
    ]
    return {
        "strategy": strategy,
        "budget": budget,
        "seed": seed,
        "run": run,
        "pool": len(pool.ids),
        "excluded": len(exclude),
        "chosen": chosen,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        run = _check(args)
        exclude = _excluded(args.exclude)
    except (options.OptionError, OSError, ValueError, KeyError) as e:
        logger.error("configuration error: %s", e)
        return EXIT_CONFIG
    record = choose(
        args.run, len(run["vocabulary"]), args.strategy, args.budget, args.seed, exclude
    )
    ids = [c["image_id"] for c in record["chosen"]]
    subset = storage.join(args.output, "run")
    selection.write_subset(
        args.run, subset, ids, {k: v for k, v in record.items() if k != "chosen"}
    )
    lines = "".join(json.dumps(c, ensure_ascii=True) + "\n" for c in record["chosen"])
    storage.write_bytes(storage.join(args.output, "selected.jsonl"), lines.encode())
    storage.write_bytes(
        storage.join(args.output, "selection.json"), json.dumps(record, indent=2).encode()
    )
    if args.export:
        out = storage.join(args.output, args.export)
        plan = runner.plan_export(subset, args.export, out, options.ExportOptions())
        runner.run_export(plan)
    print(f"selected {len(ids)} of {record['pool']} images ({args.strategy}) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
