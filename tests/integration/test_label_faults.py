"""Faults survived: throttling and 5xx from S3, killed and terminated drivers. Real local Ray
(one per driver process), real moto S3 on 127.0.0.1 behind a fault-injecting proxy, real
photos."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from fakes import REPO_ROOT
from s3_fault_proxy import FaultProxy

from pipeline import schema, write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNNER = Path(__file__).with_name("label_subprocess.py")


ID_STATUS = [schema.IMAGE_ID, schema.STATUS]  # the columns these tests read


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "PYTHONPATH": str(REPO_ROOT), **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def _label(input_uri: str, output: str, env: dict[str, str], *flags: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(RUNNER), input_uri, output, *flags],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _upload(moto_s3: str, s3_bucket: str, photos: list[Path]) -> str:
    client = boto3.client("s3", endpoint_url=moto_s3)
    bucket = s3_bucket.removeprefix("s3://")
    for p in photos:
        client.put_object(Bucket=bucket, Key=f"in/{p.name}", Body=p.read_bytes())
    return f"{s3_bucket}/in"


def test_throttling_and_5xx_lose_and_duplicate_nothing(
    moto_s3: str, s3_bucket: str, sample_photos
) -> None:
    photos = sample_photos.jpegs(24)
    input_uri, output = _upload(moto_s3, s3_bucket, photos), f"{s3_bucket}/out"
    proxy = FaultProxy(moto_s3, fault_every=4)  # 1 request in 4: 503 SlowDown or 500
    try:
        result = _label(input_uri, output, _env(proxy.start()))
    finally:
        proxy.stop()
    print(f"proxy: {proxy.requests} requests, {proxy.faults} faults")
    assert proxy.faults >= 10 and proxy.faults * 4 <= proxy.requests + 4
    assert result == {"images": 24, "errors": 0}
    table = write.read_labels(output, ID_STATUS)
    ids = table[schema.IMAGE_ID].to_pylist()
    assert len(ids) == len(set(ids)) == 24 and set(table[schema.STATUS].to_pylist()) == {"ok"}


def test_read_that_keeps_failing_is_an_error_row_until_retried(
    moto_s3: str, s3_bucket: str, sample_photos
) -> None:
    photos = sample_photos.jpegs(6)
    input_uri, output = _upload(moto_s3, s3_bucket, photos), f"{s3_bucket}/out"
    proxy = FaultProxy(moto_s3, fail_paths=[f"/in/{photos[3].name}"])
    try:
        env = _env(proxy.start(), AWS_MAX_ATTEMPTS="2")
        first = _label(input_uri, output, env)
        errors = [
            r
            for r in write.read_labels(output, ID_STATUS).to_pylist()
            if r[schema.STATUS] == "error"
        ]
        proxy.fail_paths = ()  # the outage is over
        plain = _label(input_uri, output, env)
        retried = _label(input_uri, output, env, "--retry-errors")
    finally:
        proxy.stop()
    assert first == {"images": 6, "errors": 1}
    assert [r[schema.IMAGE_ID] for r in errors] == [photos[3].name]
    assert plain["images"] == 0
    assert retried == {"images": 1, "errors": 0}
    table = write.read_labels(output, ID_STATUS)
    assert sorted(table[schema.IMAGE_ID].to_pylist()) == sorted(p.name for p in photos)
    assert set(table[schema.STATUS].to_pylist()) == {"ok"}


def _group_processes(sid: int) -> list[int]:
    """Live processes in session ``sid``: the runner and the local Ray it started (Ray workers
    get process groups of their own, but stay in the session)."""
    out = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _start_runner(src: Path, output: Path, slow_s: float = 0.4) -> subprocess.Popen:
    cmd = [sys.executable, str(RUNNER), str(src), str(output), "--slow-s", str(slow_s)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own session, so the test can clean up after it
    )


def _reap(proc: subprocess.Popen) -> None:
    """Kill whatever the runner's session still holds (processes this test started)."""
    for pid in _group_processes(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_sigkill_the_driver_then_rerun_gives_one_row_per_input(
    tmp_path: Path, sample_photos
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    photos = sample_photos.jpegs(40)
    for p in photos:
        (src / p.name).write_bytes(p.read_bytes())
    output = tmp_path / "out"
    rng = random.Random(12)
    for _ in range(3):
        proc = _start_runner(src, output)
        time.sleep(rng.uniform(4.0, 9.0))
        proc.send_signal(signal.SIGKILL)  # the driver only
        proc.wait()
        _reap(proc)
    saved = sum(m["rows"] for m in write.read_markers(str(output)).values())
    final = _start_runner(src, output)
    stdout, _ = final.communicate(timeout=300)
    _reap(final)
    assert final.returncode == 0
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    ids = write.read_labels(str(output), ID_STATUS)[schema.IMAGE_ID].to_pylist()
    assert len(ids) == len(set(ids)) == 40
    assert result["images"] == 40 - saved  # work marked done before a kill is never redone
    on_disk = sorted(p.name for p in (output / "labels").iterdir())
    assert on_disk == sorted(u.rsplit("/", 1)[-1] for u in write.label_files(str(output)))


def test_sigterm_shuts_the_local_ray_down(tmp_path: Path, sample_photos) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_photos.jpegs(40):
        (src / p.name).write_bytes(p.read_bytes())
    output = tmp_path / "out"
    proc = _start_runner(src, output)
    try:
        deadline = time.monotonic() + 120
        while not list(output.glob("_markers/*.json")) and time.monotonic() < deadline:
            time.sleep(0.2)  # wait until Ray is up and a part is written
        assert len(_group_processes(proc.pid)) > 1
        proc.send_signal(signal.SIGTERM)
        # exit code 15 (ray.init's own handler), 143 (ours) or -6: Ray's C++ core worker may
        # abort while the interpreter exits after ray.shutdown(); cleanup has run by then
        assert proc.wait(timeout=30) in (signal.SIGTERM, 128 + signal.SIGTERM, -signal.SIGABRT)
        deadline = time.monotonic() + 15
        while _group_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _group_processes(proc.pid) == []  # no Ray process left behind
    finally:
        _reap(proc)


def _actor_pids(pgid: int) -> list[int]:
    pids = []
    for pid in _group_processes(pgid):
        with contextlib.suppress(OSError):
            if b"SegmentationActor" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids


def test_killed_actor_is_replaced_and_the_run_completes(tmp_path: Path, sample_photos) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_photos.jpegs(40):
        (src / p.name).write_bytes(p.read_bytes())
    output = tmp_path / "out"
    proc = _start_runner(src, output, slow_s=1.5)  # 10 batches: the actor is busy for 15 s
    try:
        deadline = time.monotonic() + 120
        while not _actor_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(4.0)  # mid-way through its first task
        actors = _actor_pids(proc.pid)
        assert len(actors) == 1 and not list(output.glob("_markers/*.json"))
        os.kill(actors[0], signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=300)
    finally:
        _reap(proc)
    assert proc.returncode == 0
    assert json.loads(stdout.decode().strip().splitlines()[-1])["images"] == 40
    ids = write.read_labels(str(output), ID_STATUS)[schema.IMAGE_ID].to_pylist()
    assert len(ids) == len(set(ids)) == 40
