"""--concurrency auto sizes the actor pool from the cluster's GPUs (no cluster needed)."""

from __future__ import annotations

import pytest

from pipeline.config import LabelJobConfig
from pipeline.run import resolve_pool_size


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
