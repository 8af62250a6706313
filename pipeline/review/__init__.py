"""Static HTML review report of a labelling run (see ``docs/review.md``)."""

from pipeline.review.load import RunNotFoundError
from pipeline.review.report import DEFAULT_MAX_ERRORS, DEFAULT_SAMPLE, ReportResult, build_report

__all__ = [
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_SAMPLE",
    "ReportResult",
    "RunNotFoundError",
    "build_report",
]
