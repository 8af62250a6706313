"""A job run in-process (a notebook, a test session) leaves the Ray its caller started running."""

from __future__ import annotations

import pytest
import ray

from pipeline.local_ray import init_ray, shutdown_on_signals

pytestmark = pytest.mark.integration


def test_a_job_block_leaves_the_callers_ray_running(ray_local):
    with shutdown_on_signals():
        init_ray()  # a no-op: the caller's Ray is already connected
    assert ray.is_initialized()
    assert ray.get(ray.put(41)) + 1 == 42  # still usable, not only flagged
