"""The output lease (``pipeline.lease``) on a local folder and on the moto S3 server (127.0.0.1):
acquire, contend, stale takeover, heartbeat, lost lease, wait, release on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest
from fakes import REPO_ROOT

from pipeline import lease_store, storage, write
from pipeline.lease import (
    EXIT_BUSY,
    Lease,
    LeaseLost,
    OutputBusy,
    hold,
    lease_uri,
)


@pytest.fixture(params=["local", "s3"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An output URI on a local folder or a fresh moto S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("s3_bucket") + "/out"


def _body(output: str) -> dict:
    return json.loads(storage.read_bytes(lease_uri(output)))


def _age_resolution(output: str) -> float:
    """S3 ages come from Last-Modified (whole seconds)."""
    return 1.0 if output.startswith("s3://") else 0.0


def test_second_run_is_busy_until_the_first_releases(output: str) -> None:
    first = Lease(output, job="label", ttl_s=30)
    first.acquire()
    body = _body(output)
    assert (body["run_id"], body["state"], body["generation"]) == (first.run_id, "held", 1)
    assert body["pid"] == os.getpid() and body["ttl_s"] == 30
    with pytest.raises(OutputBusy) as busy:
        Lease(output, job="label").acquire("exit")
    message = str(busy.value)
    assert "\n" not in message and message.startswith("skipped: output busy")
    assert first.run_id in message and f"exit {EXIT_BUSY}" in message
    first.release()
    assert _body(output)["state"] == "released"
    second = Lease(output, job="label", ttl_s=30)
    second.acquire()
    assert (_body(output)["run_id"], _body(output)["generation"]) == (second.run_id, 2)
    second.release()


def test_of_many_simultaneous_runs_exactly_one_gets_the_lease(output: str) -> None:
    leases = [Lease(output, job="label", ttl_s=30) for _ in range(8)]
    start = threading.Barrier(len(leases))

    def attempt(lease: Lease) -> bool:
        start.wait()
        try:
            lease.acquire()
        except OutputBusy:
            return False
        return True

    with ThreadPoolExecutor(len(leases)) as pool:
        won = list(pool.map(attempt, leases))
    assert won.count(True) == 1
    winner = leases[won.index(True)]
    assert _body(output)["run_id"] == winner.run_id
    winner.release()


def _foreign_lease(output: str, ttl_s: float) -> None:
    """A held lease of a run on another host that stopped renewing it."""
    body = {
        "run_id": "dead-run",
        "job": "label",
        "host": "elsewhere",
        "pid": 1,
        "ttl_s": ttl_s,
        "generation": 7,
        "state": "held",
        "write_id": "x",
    }
    storage.write_bytes(lease_uri(output), json.dumps(body).encode())


def test_stale_lease_is_taken_over_after_its_ttl_by_one_run(output: str, caplog) -> None:
    ttl = 3.0
    _foreign_lease(output, ttl)
    with pytest.raises(OutputBusy):  # fresh: the other host's run may be alive
        Lease(output, job="label").acquire()
    time.sleep(ttl + _age_resolution(output) + 0.3)
    leases = [Lease(output, job="label", ttl_s=30) for _ in range(6)]
    with caplog.at_level(logging.WARNING), ThreadPoolExecutor(6) as pool:
        won = list(pool.map(lambda x: _try(x), leases))
    assert won.count(True) == 1
    assert _body(output)["generation"] == 8
    assert "took over the lease" in caplog.text and "dead-run" in caplog.text
    assert "not renewed for" in caplog.text
    leases[won.index(True)].release()


def _try(lease: Lease) -> bool:
    try:
        lease.acquire()
    except OutputBusy:
        return False
    return True


def test_heartbeat_keeps_a_short_lease_alive(output: str) -> None:
    holder = Lease(output, job="label", ttl_s=3.0)  # renewed every 0.75 s
    holder.acquire()
    renewed = {_body(output)["renewed"]}
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline:
        with pytest.raises(OutputBusy):
            Lease(output, job="label").acquire()
        renewed.add(_body(output)["renewed"])
        time.sleep(0.3)
    assert len(renewed) >= 4
    assert not holder.lost.is_set()
    holder.release()


def test_paused_holder_loses_the_lease_and_stops_writing(output: str, caplog) -> None:
    ttl = 1.0
    paused = Lease(output, job="label", ttl_s=ttl)
    paused.acquire()
    paused._stop.set()  # the heartbeat stops as if the process were paused
    paused._thread.join()
    time.sleep(ttl + _age_resolution(output) + 0.3)
    taker = Lease(output, job="label", ttl_s=30)
    with caplog.at_level(logging.WARNING):
        taker.acquire()
    assert "took over the lease" in caplog.text and paused.run_id in caplog.text
    with pytest.raises(LeaseLost, match=taker.run_id):
        paused.check()
    table = pa.table({"image_id": ["a"]})
    with pytest.raises(LeaseLost):
        write.write_part_files(output, "part-x", table, {"ids": {}}, paused.token.verify)
    assert not storage.exists(write.label_uri(output, "part-x"))
    assert not storage.exists(write.marker_uri(output, "part-x"))
    assert not paused._write("held", paused.generation, paused._version)  # renewal refused
    paused.release()  # must not release the new holder's lease
    body = _body(output)
    assert (body["run_id"], body["state"]) == (taker.run_id, "held")
    taker.release()


def test_heartbeat_notices_the_takeover(output: str) -> None:
    holder = Lease(output, job="label", ttl_s=2.0)
    holder.acquire()
    snap = lease_store.store_for(holder.uri).read()
    other = Lease(output, job="label", ttl_s=30)  # takes over by force: what a stale run sees
    assert other._write("held", holder.generation + 1, snap.version)
    deadline = time.monotonic() + 5
    while not holder.lost.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert holder.lost.is_set()
    with pytest.raises(LeaseLost):
        holder.check()
    holder.release()
    assert _body(output)["run_id"] == other.run_id


def test_wait_gets_the_lease_when_the_holder_releases(output: str) -> None:
    holder = Lease(output, job="label", ttl_s=30)
    holder.acquire()
    with pytest.raises(OutputBusy, match="waited"):
        Lease(output, job="label").acquire("wait", wait_timeout_s=0.5)
    timer = threading.Timer(1.0, holder.release)
    timer.start()
    waiter = Lease(output, job="label", ttl_s=30)
    start = time.monotonic()
    waiter.acquire("wait", wait_timeout_s=30)
    assert 0.8 < time.monotonic() - start < 10
    assert _body(output)["run_id"] == waiter.run_id
    waiter.release()


HOLDER = """
import sys, time
from pipeline.lease import hold
with hold(sys.argv[1], job="label", ttl_s=600):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(output: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, output], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_sigterm_releases_the_lease(output: str) -> None:
    proc = _holder(output)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert _body(output)["state"] == "released"


def test_lease_of_a_killed_process_on_this_host_is_taken_at_once(output: str, caplog) -> None:
    proc = _holder(output)
    with pytest.raises(OutputBusy):  # alive: busy although its TTL is far away
        Lease(output, job="label").acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    taker = Lease(output, job="label", ttl_s=30)
    with caplog.at_level(logging.WARNING):
        taker.acquire()  # TTL 600 s not reached: the pid check decides
    assert f"its process {proc.pid} on this host has exited" in caplog.text
    taker.release()


def test_hold_releases_when_the_block_raises(output: str) -> None:
    with pytest.raises(ZeroDivisionError), hold(output, job="export", ttl_s=30):
        1 / 0  # noqa: B018
    assert _body(output)["state"] == "released"


def test_stale_lock_file_is_broken(tmp_path: Path) -> None:
    store = lease_store.FileStore(str(tmp_path / "_lease.json"))
    version = store.create(b'{"state": "held"}')
    lock = tmp_path / "_lease.json.lock"
    lock.write_bytes(b"left by a dead process")
    old = time.time() - lease_store.LOCK_STALE_S - 5
    os.utime(lock, (old, old))
    assert store.swap(b'{"state": "released"}', version) is not None
    assert not lock.exists()
    assert store.read().body == {"state": "released"}


def test_server_time_survives_a_doubled_date_header() -> None:
    """A proxy that adds its own ``Date`` makes botocore join two values with ", "."""
    one = "Thu, 03 Dec 2026 18:43:56 GMT"
    parsed = lease_store._server_time(f"{one}, Thu, 03 Dec 2026 18:43:57 GMT")
    assert parsed.isoformat() == "2026-12-03T18:43:56+00:00"
    assert lease_store._server_time("garbage").tzinfo is not None  # this machine's clock
