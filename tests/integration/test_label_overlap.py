"""Overlapping runs on one output: one run owns it (``pipeline.lease``). Real drivers in
subprocesses (``label_subprocess.py``), each with its own local Ray; local folder and the moto S3
server on 127.0.0.1; real photos.

Prints one ``OVERLAP``/``TAKEOVER`` line per case (``pytest -s``) for docs/incremental.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import boto3
import pytest
from fakes import REPO_ROOT

from pipeline import lease, schema, storage, write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNNER = Path(__file__).with_name("label_subprocess.py")
SMALL = ["--shard-size", "4", "--batch-size", "2"]


class Runner:
    """One ``label_subprocess.py`` driver; its output lines are collected with arrival times."""

    def __init__(self, input_uri: str, output: str, *flags: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(RUNNER), input_uri, output, *SMALL, *flags],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own session: the test can reap its Ray
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, ls=lines: ls.extend(s), daemon=True).start()

    def wait_for(self, prefix: str, timeout: float = 120) -> float:
        """Unix time printed on the first stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.out):
                if line.startswith(prefix):
                    return float(line.split()[-1])
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.stderr()}"
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} within {timeout} s: {self.stderr()}")

    def finish(self, timeout: float = 240) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.2)  # the reader threads drain the pipes
        self.reap()
        return code

    def stderr(self) -> str:
        return "".join(self.err)[-4000:]

    def log_time(self, text: str) -> float:
        """Time of the first log line containing ``text`` (``%(created)`` is its first field)."""
        (line,) = [ln for ln in self.err if text in ln][:1]
        return float(line.split()[0])

    def result(self) -> dict:
        return json.loads(self.out[-1])

    def run_id(self) -> str:
        return next(ln.split()[1] for ln in self.out if ln.startswith("RUN_ID"))

    def reap(self) -> None:
        """Kill what the runner's session still holds (processes this test started)."""
        found = subprocess.run(["pgrep", "-s", str(self.proc.pid)], capture_output=True, text=True)
        for pid in map(int, found.stdout.split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _inputs(where: str, photos: list[Path], tmp_path: Path, request) -> tuple[str, str]:
    if where == "local":
        src = tmp_path / "in"
        src.mkdir()
        for p in photos:
            (src / p.name).write_bytes(p.read_bytes())
        return str(src), str(tmp_path / "out")
    moto_s3, bucket = request.getfixturevalue("moto_s3"), request.getfixturevalue("s3_bucket")
    client = boto3.client("s3", endpoint_url=moto_s3)
    for p in photos:
        client.put_object(Bucket=bucket[5:], Key=f"in/{p.name}", Body=p.read_bytes())
    return f"{bucket}/in", f"{bucket}/out"


def _check_output(output: str, n: int) -> dict[str, list[str]]:
    """One row per input, every marker with its Parquet file; returns ids per run id."""
    ids = write.read_labels(output, [schema.IMAGE_ID])[schema.IMAGE_ID].to_pylist()
    assert len(ids) == len(set(ids)) == n
    by_run: dict[str, list[str]] = {}
    for part, marker in write.read_markers(output).items():
        assert storage.exists(write.label_uri(output, part)), f"{part}: marker without Parquet"
        by_run.setdefault(marker["run_id"], []).extend(i for v in marker["ids"].values() for i in v)
    return by_run


def _busy(runner: Runner, trigger: Path, window: tuple[float, float | None]) -> tuple[int, str]:
    """Release a pre-started second run, check it tried inside ``window``; its code and line."""
    trigger.touch()
    code = runner.finish(timeout=120)
    attempt = runner.wait_for("ATTEMPT")
    assert window[0] <= attempt and (window[1] is None or attempt <= window[1]), (window, attempt)
    lines = [ln for ln in runner.err if "skipped: output busy" in ln]
    return code, lines[0] if lines else runner.stderr()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_second_run_during_plan_write_and_summary_does_nothing(
    where: str, tmp_path: Path, sample_photos, request
) -> None:
    photos = sample_photos.jpegs(16)
    input_uri, output = _inputs(where, photos, tmp_path, request)
    triggers = {k: tmp_path / f"go-{k}" for k in ("plan", "write", "summary")}
    seconds = {k: Runner(input_uri, output, "--start-when", str(t)) for k, t in triggers.items()}
    first = Runner(
        input_uri, output, "--pause-at", "plan,finish", "--pause-s", "6", "--slow-s", "0.6"
    )
    try:
        paused = first.wait_for("PAUSED plan")
        outcome = {"plan": _busy(seconds["plan"], triggers["plan"], (paused, None))}
        resumed = first.wait_for("RESUMED plan")
        assert seconds["plan"].wait_for("ATTEMPT") <= resumed
        deadline = time.monotonic() + 120
        while not write.finished_parts(output) and time.monotonic() < deadline:
            time.sleep(0.05)
        marked = time.time()
        outcome["write"] = _busy(seconds["write"], triggers["write"], (marked, None))
        paused = first.wait_for("PAUSED finish")
        assert seconds["write"].wait_for("ATTEMPT") <= paused  # still writing then
        outcome["summary"] = _busy(seconds["summary"], triggers["summary"], (paused, None))
        waiter = Runner(input_uri, output, "--if-busy", "wait", "--wait-timeout", "120")
        assert seconds["summary"].wait_for("ATTEMPT") <= first.wait_for("RESUMED finish")
        assert first.finish() == 0, first.stderr()
        assert waiter.finish() == 0, waiter.stderr()
    finally:
        for r in [first, *seconds.values()]:
            r.reap()
    by_run = _check_output(output, len(photos))
    assert list(by_run) == [first.run_id()]  # every row written by the first run
    labelled = first.result()["images"] + waiter.result()["images"]  # busy runs label nothing
    double = labelled - len(photos)
    assert first.result()["images"] == len(photos) and double == 0
    rows = sum(len(ids) for ids in by_run.values())
    for step, (code, line) in outcome.items():
        assert code == lease.EXIT_BUSY, line
        assert "skipped: output busy" in line and first.run_id() in line, line
        print(
            f"OVERLAP {where} {step}: rows {rows}/{len(photos)}, double-labelled {double}, "
            f"exit first 0 second {code} waiter 0 (labelled {waiter.result()['images']})"
        )


def test_killed_holder_is_taken_over_and_the_next_run_finishes(
    tmp_path: Path, sample_photos, request
) -> None:
    photos = sample_photos.jpegs(16)
    input_uri, output = _inputs("s3", photos, tmp_path, request)
    first = Runner(input_uri, output, "--slow-s", "0.6", "--lease-ttl", "5")
    try:
        deadline = time.monotonic() + 120
        while not write.finished_parts(output) and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = time.time()
        first.proc.send_signal(signal.SIGKILL)  # the driver only; its Ray exits by itself
        first.finish()
        saved = sum(m["rows"] for m in write.read_markers(output).values())
        second = Runner(
            input_uri, output, "--lease-ttl", "5", "--if-busy", "wait", "--wait-timeout", "60"
        )
        assert second.finish() == 0, second.stderr()
    finally:
        first.reap()
    taken = second.log_time("took over the lease")
    log = "".join(second.err)
    assert "has exited" in log or "not renewed" in log
    assert second.result()["images"] == len(photos) - saved  # marked work is never redone
    by_run = _check_output(output, len(photos))
    assert set(by_run) <= {second.run_id(), *by_run} and len(by_run) == 2
    print(
        f"TAKEOVER sigkill s3: next run took over {taken - killed:.1f} s after the kill "
        f"(its start included); rows {len(photos)}/{len(photos)}"
    )


def test_paused_run_loses_its_lease_after_the_ttl_and_stops_writing(
    tmp_path: Path, sample_photos, request
) -> None:
    photos = sample_photos.jpegs(24)
    input_uri, output = _inputs("local", photos, tmp_path, request)
    ttl = "3"
    first = Runner(input_uri, output, "--slow-s", "1.0", "--lease-ttl", ttl)
    second = None
    try:
        deadline = time.monotonic() + 120
        while not write.finished_parts(output) and time.monotonic() < deadline:
            time.sleep(0.05)
        first.proc.send_signal(signal.SIGSTOP)  # the driver pauses: no renewals
        stopped = time.time()
        second = Runner(
            input_uri, output, "--lease-ttl", ttl, "--if-busy", "wait", "--wait-timeout", "60"
        )
        deadline = time.monotonic() + 60
        while not any("took over the lease" in ln for ln in second.err):
            assert time.monotonic() < deadline, second.stderr()
            time.sleep(0.05)
        taken = second.log_time("took over the lease")
        first.proc.send_signal(signal.SIGCONT)
        assert first.finish() == lease.EXIT_LEASE_LOST, first.stderr()
        assert second.finish() == 0, second.stderr()
    finally:
        first.proc.send_signal(signal.SIGCONT)
        for r in (first, second):
            if r is not None:
                r.reap()
    assert "lease lost" in first.stderr() and second.run_id() in first.stderr()
    by_run = _check_output(output, len(photos))
    first_ids = [i for run_id, ids in by_run.items() if run_id != second.run_id() for i in ids]
    assert not set(first_ids) & set(by_run[second.run_id()])  # no image labelled by both
    assert second.result()["images"] == len(photos) - len(first_ids)
    for marker in write.read_markers(output).values():  # nothing of the first after takeover
        if marker["run_id"] != second.run_id():
            assert datetime.fromisoformat(marker["written_at"]).timestamp() < taken
    print(
        f"TAKEOVER sigstop local: taken over {taken - stopped:.1f} s after the pause "
        f"(TTL {ttl} s); first exit {lease.EXIT_LEASE_LOST}; rows {len(photos)}/{len(photos)}"
    )
