"""Write a static HTML review report of a labelling run (opens offline from disk).

Usage::

    python jobs/review.py s3://bucket/labels/ --out report/
    python jobs/review.py runs/camvid --out runs/camvid-report --sample 200

The report shows the run summary, per-class pixel and image counts, a histogram of per-image
confidence, overlays of the least confident images and the error rows. Only ``--sample`` images
are fetched and drawn, so its cost does not grow with the run. See docs/review.md.

One report writer at a time per ``--out`` (lease ``<out>/_lease.json``): a second one exits 75.

Exit codes: 0 done; 2 configuration error (no run at RUN, --out not local, bad numbers); 75
skipped: another live report writer holds ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python jobs/review.py` puts jobs/, not the repo, on the path
    sys.path.insert(0, str(REPO_ROOT))

from jobs.flags import JobHelpFormatter  # noqa: E402
from pipeline import lease as leases  # noqa: E402
from pipeline import storage  # noqa: E402
from pipeline.review import (  # noqa: E402
    DEFAULT_MAX_ERRORS,
    DEFAULT_SAMPLE,
    RunNotFoundError,
    build_report,
)

logger = logging.getLogger("jobs.review")

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    """Command line."""
    p = argparse.ArgumentParser(
        prog="jobs/review.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=JobHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="labelling run output URI (local, s3://, gs://)")
    p.add_argument("--out", required=True, help="local folder for the report (index.html)")
    p.add_argument(
        "--sample", type=int, default=DEFAULT_SAMPLE, help="overlays drawn, least confident first"
    )
    p.add_argument("--max-errors", type=int, default=DEFAULT_MAX_ERRORS, help="error rows listed")
    p.add_argument("--workers", type=int, default=None, help="thumbnail processes (default: CPUs)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Write the report; returns the process exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    local = storage.split_uri(args.out)[0] == "file"  # else build_report refuses --out
    try:
        with leases.hold(args.out, job="review") if local else contextlib.nullcontext():
            result = build_report(
                args.run,
                args.out,
                sample=args.sample,
                max_errors=args.max_errors,
                workers=args.workers,
            )
    except leases.OutputBusy as e:
        logger.warning("%s", e)
        return leases.EXIT_BUSY
    except (RunNotFoundError, ValueError) as e:
        logger.error("configuration error: %s", e)
        return EXIT_CONFIG
    print(
        f"report: {result.index} ({result.images} images, {result.errors} errors, "
        f"{result.sampled} overlays, {result.seconds:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
