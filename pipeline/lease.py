"""One run owns an output at a time: the lease ``<output>/_lease.json``.

A run takes the lease before it plans, deletes or writes anything, renews it from a heartbeat
thread every ``ttl / 4`` seconds, and releases it at the end (also on Ctrl-C and SIGTERM). The
lease file holds the run id, job, host, pid, start and renewal times, the TTL, a generation
(the fencing token: +1 at every acquisition) and a state (``held`` / ``released``).

* **Taking it** is one atomic write (``pipeline.lease_store``): an exclusive create when there is
  no lease file, else a compare-and-swap of the version read (S3: ``If-None-Match: *`` /
  ``If-Match: <ETag>``; files: ``link`` / lock file + ``rename``). Of two runs, one wins.
* **Busy**: a held lease renewed within its TTL belongs to a live run. The second run exits
  with :data:`EXIT_BUSY` (75, ``EX_TEMPFAIL``: "skipped") and one line naming the holder, or,
  with ``if_busy="wait"``, polls until the lease is free or ``wait_timeout_s`` has passed. It
  has planned, deleted and written nothing by then.
* **Stale**: a lease not renewed for its TTL (the holder was SIGKILLed, its node vanished, or
  it hung) is taken over by the same compare-and-swap, and the log says so. A lease whose
  holder process is gone from this very host (same host name, boot and pid namespace) is taken
  over at once.
* **Lost**: a heartbeat whose compare-and-swap fails means another run took the lease over.
  The run stops: writers (:meth:`LeaseToken.verify`, run in Ray tasks before each Parquet file
  and marker) and the driver (:meth:`Lease.check`) raise :class:`LeaseLost`, exit code
  :data:`EXIT_LEASE_LOST`.

Outputs on stores without an implemented atomic write (``gs://`` and other fsspec protocols)
run without a lease, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.lease_store import Snapshot, store_for

logger = logging.getLogger(__name__)

LEASE_FILE = "_lease.json"
DEFAULT_TTL_S = 300.0
DEFAULT_WAIT_TIMEOUT_S = 3600.0
IF_BUSY_CHOICES = ("exit", "wait")
EXIT_BUSY = 75  # EX_TEMPFAIL from sysexits.h: "skipped, try again later"
EXIT_LEASE_LOST = 4
RENEWALS_PER_TTL = 4
HELD, RELEASED = "held", "released"


class OutputBusy(RuntimeError):
    """Another live run holds the output's lease; the message is one line."""


class LeaseLost(RuntimeError):
    """This run's lease was taken over by another run; it must stop writing."""


def new_run_id() -> str:
    """``<UTC time>-<8 hex>``: sortable, unique."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def lease_uri(output: str) -> str:
    """URI of an output's lease file."""
    return storage.join(output, LEASE_FILE)


def _proc_identity() -> dict[str, Any]:
    """What tells whether a pid on this host is still the same process (Linux /proc)."""
    ident: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    with contextlib.suppress(OSError, IndexError):
        ident["boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ident["pid_ns"] = os.readlink("/proc/self/ns/pid")
        ident["pid_start"] = _pid_start(os.getpid())
    return ident


def _pid_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/pid/stat)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_gone(body: dict[str, Any]) -> bool:
    """True when the holder ran on this host (same boot, pid namespace) and has exited."""
    mine = _proc_identity()
    keys = ("host", "boot_id", "pid_ns")
    if "pid_start" not in mine or any(body.get(k) != mine[k] for k in keys):
        return False
    return _pid_start(int(body.get("pid", -1))) != body.get("pid_start")


def free_reason(snap: Snapshot) -> str | None:
    """Why the lease can be taken (released, stale, holder gone); None while a run holds it."""
    body = snap.body
    if body.get("state") == RELEASED:
        return f"released by run {body.get('run_id')}"
    if body.get("state") != HELD:
        return "the lease file is not a lease"
    ttl = float(body.get("ttl_s", DEFAULT_TTL_S))
    if snap.age_s > ttl:
        return f"stale: not renewed for {snap.age_s:.0f} s (TTL {ttl:.0f} s)"
    if _holder_gone(body):
        return f"stale: its process {body.get('pid')} on this host has exited"
    return None


def describe(body: dict[str, Any]) -> str:
    """``run R (job, host H, pid P)`` for messages."""
    return (
        f"run {body.get('run_id')} ({body.get('job')}, host {body.get('host')}, "
        f"pid {body.get('pid')})"
    )


@dataclass(frozen=True)
class LeaseToken:
    """What a writer needs to check that its run still owns the output; small and picklable."""

    uri: str
    run_id: str
    generation: int

    def verify(self) -> None:
        """One read of the lease.

        Raises:
            LeaseLost: the lease is no longer this run's (taken over, or released).
        """
        store = store_for(self.uri)
        if store is None:
            return
        snap = store.read()
        body = snap.body if snap else {}
        if body.get("run_id") != self.run_id or body.get("generation") != self.generation:
            holder = describe(body) if snap else "nobody"
            raise LeaseLost(
                f"lease {self.uri} of run {self.run_id} is now held by {holder}; "
                "this run stopped writing"
            )
        if body.get("state") != HELD:
            raise LeaseLost(f"lease {self.uri} of run {self.run_id} was released")


class Lease:
    """The lease of one output for one run (see the module docstring)."""

    def __init__(
        self, output: str, *, job: str, ttl_s: float = DEFAULT_TTL_S, run_id: str | None = None
    ) -> None:
        self.uri = lease_uri(output)
        self.store = store_for(self.uri)
        self.job, self.ttl_s = job, float(ttl_s)
        self.run_id = run_id or new_run_id()
        self.generation = 0
        self.lost = threading.Event()
        self._version: str | None = None
        self._started = datetime.now(UTC).isoformat()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> LeaseToken:
        """What writers in Ray tasks verify."""
        return LeaseToken(self.uri, self.run_id, self.generation)

    def acquire(self, if_busy: str = "exit", wait_timeout_s: float = 0.0) -> None:
        """Take the lease and start the heartbeat.

        Args:
            if_busy: ``exit`` (raise at once) or ``wait`` (poll until free or the timeout).
            wait_timeout_s: the longest wait with ``wait``.

        Raises:
            OutputBusy: a live run holds it (after the wait, with ``wait``).
            OSError: the store cannot be read or written.
        """
        if self.store is None:
            logger.warning(
                "%s: no atomic lease on this store; overlapping runs are not detected", self.uri
            )
            return
        deadline = time.monotonic() + (wait_timeout_s if if_busy == "wait" else 0.0)
        waited = False
        while True:
            holder = self._try_acquire()
            if holder is None:
                break
            ttl = float(holder.body.get("ttl_s", self.ttl_s))
            if time.monotonic() >= deadline:
                why = f"waited {wait_timeout_s:.0f} s; " if waited else ""
                raise OutputBusy(
                    f"skipped: output busy: {self.uri} is held by {describe(holder.body)}, "
                    f"renewed {holder.age_s:.0f} s ago (stale after {ttl:.0f} s); {why}"
                    f"nothing was done (exit {EXIT_BUSY})"
                )
            if not waited:
                logger.info("waiting for the lease %s held by %s", self.uri, describe(holder.body))
            waited = True
            time.sleep(min(max(ttl / 10, 0.2), 5.0, max(deadline - time.monotonic(), 0.0)))
        self._thread = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def _try_acquire(self) -> Snapshot | None:
        """One attempt; None when taken, else the live holder's snapshot."""
        for _ in range(5):  # lost races re-read; someone else's live lease ends the loop
            snap = self.store.read()
            reason = "no lease" if snap is None else free_reason(snap)
            if reason is None:
                return snap
            generation = int(snap.body.get("generation", 0)) + 1 if snap else 1
            if self._write(HELD, generation, None if snap is None else snap.version):
                self.generation = generation
                if snap is not None and not reason.startswith("released"):
                    logger.warning(
                        "took over the lease %s from %s: %s", self.uri, describe(snap.body), reason
                    )
                logger.info(
                    "lease %s taken by run %s (generation %d, TTL %.0f s)",
                    self.uri,
                    self.run_id,
                    generation,
                    self.ttl_s,
                )
                return None
        raise OSError(f"{self.uri}: could not take the lease after 5 races")

    def _write(self, state: str, generation: int, version: str | None) -> bool:
        """Create (``version`` None) or swap the lease; True when this write is the lease now."""
        write_id = uuid.uuid4().hex
        body = {
            "run_id": self.run_id,
            "job": self.job,
            **_proc_identity(),
            "started": self._started,
            "renewed": datetime.now(UTC).isoformat(),
            "ttl_s": self.ttl_s,
            "generation": generation,
            "state": state,
            "write_id": write_id,
        }
        data = json.dumps(body, sort_keys=True).encode()
        new = self.store.create(data) if version is None else self.store.swap(data, version)
        if new is None:  # lost, or a retried PUT whose first attempt had in fact succeeded
            current = self.store.read()
            if current is not None and current.body.get("write_id") == write_id:
                new = current.version
        if new is not None:
            self._version = new
        return new is not None

    def _heartbeat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl_s / RENEWALS_PER_TTL):
            try:
                with self._lock:
                    if self._stop.is_set():
                        return
                    renewed = self._write(HELD, self.generation, self._version)
            except Exception as e:  # the thread must not die: a dead heartbeat looks stale
                logger.warning("lease %s: renewal failed (%s); retrying", self.uri, e)
                if time.monotonic() - last_ok <= self.ttl_s:
                    continue
                renewed = False
            if not renewed:
                self._lose()
                return
            last_ok = time.monotonic()

    def _lose(self) -> None:
        self.lost.set()
        with contextlib.suppress(OSError):
            snap = self.store.read()
            holder = describe(snap.body) if snap else "nobody"
            logger.error(
                "lost the lease %s: now held by %s; this run stops writing", self.uri, holder
            )

    def check(self) -> None:
        """Verify that this run still holds the lease (one read); call before deleting.

        Raises:
            LeaseLost: it was taken over.
        """
        if self.store is None:
            return
        if self.lost.is_set():
            raise LeaseLost(f"lease {self.uri} of run {self.run_id} was taken over; stopped")
        self.token.verify()

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released (unless it was lost)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.store is None or self._version is None or self.lost.is_set():
            return
        try:
            with self._lock:
                released = self._write(RELEASED, self.generation, self._version)
        except OSError as e:
            logger.warning("lease %s: not released (%s); it expires after its TTL", self.uri, e)
            return
        if released:
            logger.info("lease %s released by run %s", self.uri, self.run_id)
        else:
            logger.warning("lease %s: taken over before it was released", self.uri)


@contextlib.contextmanager
def hold(
    output: str,
    *,
    job: str,
    ttl_s: float = DEFAULT_TTL_S,
    if_busy: str = "exit",
    wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S,
    run_id: str | None = None,
) -> Iterator[Lease]:
    """Hold the output's lease for the block; released at its end, on Ctrl-C and on SIGTERM
    (SIGTERM raises ``SystemExit(143)`` here unless a handler is already installed).

    Raises:
        OutputBusy: see :meth:`Lease.acquire`.
    """
    lease = Lease(output, job=job, ttl_s=ttl_s, run_id=run_id)
    lease.acquire(if_busy, wait_timeout_s)
    with holding(lease):
        yield lease


@contextlib.contextmanager
def holding(lease: Lease) -> Iterator[Lease]:
    """Release an acquired lease when the block ends, also on Ctrl-C and SIGTERM."""
    with _exit_on_sigterm():
        try:
            yield lease
        finally:
            lease.release()


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """Make SIGTERM unwind (``SystemExit(128 + 15)``) when it would otherwise kill outright."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        yield
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
