"""--concurrency auto sizes the actor pool from the cluster's GPUs (no cluster needed)."""

from __future__ import annotations

import pytest

from pipeline.config import LabelJobConfig
from pipeline.run import actor_pool, resolve_actor_threads, resolve_pool_size


def _cfg(**kw) -> LabelJobConfig:
    return LabelJobConfig(input="in", output="out", vocab="v.txt", **kw)


@pytest.mark.parametrize(
    ("kw", "gpus", "expected"),
    [
        ({}, 0, (1, 1)),  # CPU-only cluster: one actor
        ({}, 8, (8, 8)),  # one actor per GPU by default
        ({"num_gpus_per_actor": 0.5}, 8, (16, 16)),  # two actors per GPU
        ({"num_gpus_per_actor": 3.0}, 8, (2, 2)),  # whole actors only
        ({"num_gpus_per_actor": 0.0}, 8, (1, 1)),  # CPU actors on a GPU cluster
        ({"concurrency": "2,6"}, 8, (2, 6)),  # explicit sizes win
    ],
)
def test_auto_pool_size(kw: dict, gpus: float, expected: tuple[int, int]) -> None:
    assert resolve_pool_size(_cfg(**kw), gpus=gpus) == expected


@pytest.mark.parametrize(
    ("kw", "gpus", "expected"),
    [
        ({}, 8, 2),  # a GPU actor: batch k's copy back overlaps batch k+1 on the device
        ({}, 0, 1),  # CPU-only cluster: threads would only share the same cores
        ({"num_gpus_per_actor": 0.0}, 8, 1),  # CPU actors on a GPU cluster
        ({"device": "cpu"}, 8, 1),
        ({"actor_threads": 3}, 0, 3),  # explicit wins
        ({"actor_threads": 1}, 8, 1),
    ],
)
def test_actor_threads(kw: dict, gpus: float, expected: int) -> None:
    assert resolve_actor_threads(_cfg(**kw), gpus=gpus) == expected


def test_pool_runs_the_udf_concurrently_only_with_several_threads() -> None:
    two = actor_pool(_cfg(concurrency="1,3"), gpus=8)
    assert (two.min_size, two.max_size) == (1, 3)
    assert two.max_concurrent_calls_per_actor == 2 and two.enable_true_multi_threading
    one = actor_pool(_cfg(), gpus=0)
    assert (one.min_size, one.max_size) == (1, 1)
    assert one.max_concurrent_calls_per_actor == 1 and not one.enable_true_multi_threading
