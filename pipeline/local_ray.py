"""Ray lifecycle of a job driver: connect or start a local Ray, and shut it down cleanly.

A local Ray (no ``RAY_ADDRESS``) starts without the dashboard unless asked for. On exit,
Ctrl-C (SIGINT) or SIGTERM, :func:`shutdown_on_signals` calls ``ray.shutdown()`` and then stops
the raylet's agent processes (dashboard agent, runtime-env agent): ``ray.shutdown()`` leaves
them running (about 210 MB, measured with Ray 2.60) until they notice that the raylet is gone.
SIGKILL cannot be caught; see ``docs/incremental.md`` for what it leaves behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

logger = logging.getLogger(__name__)

AGENT_GRACE_S = 3.0  # SIGTERM first; SIGKILL what is still alive after this
AGENT_WAIT_S = 5.0  # the raylet starts its agents while ray.init returns
_local_agents: list[int] = []  # agent pids of the local Ray this process started


def is_local() -> bool:
    """True when this driver starts its own Ray (``RAY_ADDRESS`` unset or ``local``)."""
    return (os.environ.get("RAY_ADDRESS") or "local") == "local"


def init_ray(**kwargs: Any) -> None:
    """Connect to ``RAY_ADDRESS`` when set (e.g. under ``ray job submit``), else start a local
    Ray; never silently attach to a stray ``ray start`` cluster. No-op when already connected.

    A local Ray starts without the dashboard unless ``include_dashboard=True`` is passed. Ray
    enables token authentication for it by default (``RAY_AUTH_MODE`` unset) and warns that it
    did on every start; that notice is dropped, any other auth message is kept."""
    if ray.is_initialized():
        return
    local = is_local()  # ray.init sets RAY_ADDRESS to the cluster it starts
    if local:
        kwargs.setdefault("include_dashboard", False)
        _AUTH_LOGGER.addFilter(_drop_token_auth_enabled_notice)
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", **kwargs)
    if local:  # remember them now: on SIGTERM, Ray is shut down before our cleanup runs
        _local_agents[:] = _wait_for_agents()


_AUTH_LOGGER = logging.getLogger("ray._private.authentication.authentication_token_setup")


def _drop_token_auth_enabled_notice(record: logging.LogRecord) -> bool:
    """False for Ray's "Token authentication is enabled for this Ray cluster" warning (it
    reports Ray's secure default, not a problem); True for every other record."""
    return not record.getMessage().startswith("Token authentication is enabled for this")


@contextlib.contextmanager
def shutdown_on_signals() -> Iterator[None]:
    """Shut Ray down when the block ends, also on SIGINT or SIGTERM.

    SIGTERM (what ``kill``, Kubernetes and schedulers send) unwinds like Ctrl-C, so the
    ``finally`` runs; for a local Ray its agents are stopped too (see module docstring). With
    ``RAY_ADDRESS`` this only disconnects. A Ray the caller had already started or connected
    before the block (a notebook, a test session, a library user running a job in-process) is
    the caller's: it is left running.
    """
    callers_ray = ray.is_initialized()

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    except KeyboardInterrupt:
        logger.warning("interrupted; finished parts are kept, re-run to continue")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not callers_ray:
            if ray.is_initialized():
                ray.shutdown()
            _stop(_local_agents)
            _local_agents.clear()


def _wait_for_agents() -> list[int]:
    """Pids of the local raylet's children once its two agents run (up to ``AGENT_WAIT_S``)."""
    deadline = time.monotonic() + AGENT_WAIT_S
    children = _raylet_children()
    while len(children) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        children = _raylet_children()
    return children


def _raylet_children() -> list[int]:
    """Pids of the local raylet's child processes (agents and workers); [] when unknown."""
    try:  # private API: the node this driver started
        node = ray._private.worker._global_node
        raylets = [info.process.pid for info in node.all_processes.get("raylet", [])]
    except AttributeError:
        return []
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile, or not Linux
        if int(fields[1]) in raylets:  # fields[1] is the parent pid
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(pids: list[int]) -> None:
    """SIGTERM the given processes still alive, SIGKILL them after ``AGENT_GRACE_S``."""
    alive = [p for p in pids if _alive(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + AGENT_GRACE_S
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        logger.info("stopped %d local Ray agent processes", len(pids))
