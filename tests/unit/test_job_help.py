"""Every job's ``--help``: one layout (jobs/flags.JobHelpFormatter), no empty defaults, exit codes.

Speed is measured, not tested (see the issue-19 notes): the jobs parse before importing torch.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.flags import JobHelpFormatter

REPO = Path(__file__).resolve().parents[2]
JOBS = ("label", "train", "evaluate", "review")


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """``python jobs/<job>.py --help`` of each job, as a user runs it."""
    out = {}
    for job in JOBS:
        done = subprocess.run(
            [sys.executable, str(REPO / "jobs" / f"{job}.py"), "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        out[job] = " ".join(done.stdout.split())  # argparse wraps lines; compare words
    return out


@pytest.mark.parametrize("job", JOBS)
def test_no_empty_or_doubled_defaults(helps, job) -> None:
    text = helps[job]
    assert "(default: None)" not in text and "(default: )" not in text
    assert not re.search(r"\(default: [^)]*\) \(default:", text) and "(default: False)" not in text


def test_required_flags_say_so_without_a_default(helps) -> None:
    assert "--classes CLASSES vocabulary file (zegclip.vocab format) (required)" in helps["train"]
    assert "--out OUT local folder for the report (index.html) (required)" in helps["review"]
    assert helps["review"].endswith("--workers WORKERS thumbnail processes (default: CPUs)")
    assert "--classes CLASSES class names file, mask id order (required)" in helps["evaluate"]


def test_label_help_names_config_json_random_weights_and_exit_1(helps) -> None:
    text = helps["label"]
    assert "or the path of an open_clip model config JSON" in text
    assert "'none' = random weights" in text and "--min-score 0" in text
    for code in ("0 ok", "1 any other failure", "2 configuration error", "3 error rate"):
        assert code in text


def test_train_and_label_share_the_clip_flags(helps) -> None:
    for job in ("label", "train"):
        assert (
            "--clip-pretrained CLIP_PRETRAINED open_clip pretrained tag of --clip-model"
            in (helps[job])
        )
        assert "--clip-weights CLIP_WEIGHTS open_clip weights file, local or URI" in helps[job]


def test_train_keeps_the_old_clip_weights_tag_spelling(caplog) -> None:
    from jobs import train as train_job

    base = ["--classes", "c.txt", "--output", "out"]
    with caplog.at_level(logging.WARNING, logger="jobs.train"):
        job = train_job.parse_args([*base, "--clip-weights", "none"])
    assert (job.clip_pretrained, job.clip_weights) == ("none", None)
    assert "use --clip-pretrained none" in caplog.text
    job = train_job.parse_args([*base, "--clip-weights", "s3://b/ViT-B-16.pt"])
    assert (job.clip_pretrained, job.clip_weights) == ("openai", "s3://b/ViT-B-16.pt")
    assert train_job.clip_spec(job).quick_gelu is True  # the openai tag's activation is kept
    assert train_job.random_clip(train_job.parse_args([*base, "--clip-pretrained", "none"]))


def test_formatter_shows_defaults_that_say_something() -> None:
    p = argparse.ArgumentParser(formatter_class=JobHelpFormatter, description="a\n  b")
    p.add_argument("run", help="positional")
    p.add_argument("--need", required=True, help="needed")
    p.add_argument("--zero", type=int, default=0, help="zero")
    p.add_argument("--unset", default=None, help="unset")
    p.add_argument("--empty", default="", help="empty")
    p.add_argument("--switch", action="store_true", help="switch")
    p.add_argument("--own", default=4, help="own (default: CPUs)")
    text = " ".join(p.format_help().split())
    assert "a b" not in p.format_help() and "a\n  b" in p.format_help()  # description kept
    assert "positional" in text and "positional (" not in text
    assert "needed (required)" in text and "zero (default: 0)" in text
    assert "unset --empty" in text and "empty --switch" in text and "switch --own" in text
    assert "own (default: CPUs)" in text and "(default: 4)" not in text
