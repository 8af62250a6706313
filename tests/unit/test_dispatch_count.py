"""``bench/dispatch_count.py``: which calls count as host round-trips in a CPU run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.dispatch_count import OpCounter, count_ops

DEVICE = torch.device("cpu")  # what ``predictor.device`` is in a CPU run


def _syncs(fn) -> dict[str, int]:
    with OpCounter() as counter:
        fn()
    return dict(counter.syncs)


@pytest.fixture
def on_device() -> torch.Tensor:
    """A tensor made before counting starts: a device tensor (like model weights)."""
    return torch.arange(12, dtype=torch.float32).reshape(3, 4) - 5


def test_reading_device_values_counts_once_each(on_device):
    assert _syncs(lambda: on_device.sum().item()) == {"_local_scalar_dense": 1}
    read = _syncs(lambda: bool((on_device > 0).any()))
    assert sum(read.values()) == 1 and set(read) <= {"is_nonzero", "_local_scalar_dense"}
    assert _syncs(lambda: on_device.cpu().numpy()) == {"cpu": 1}  # numpy of a host copy: free
    assert _syncs(lambda: on_device.tolist()) == {"tolist": 1}
    assert _syncs(lambda: on_device.to("cpu")) == {"to(cpu)": 1}


def test_copies_count_unless_non_blocking(on_device):
    host = lambda: torch.from_numpy(np.zeros(4, dtype=np.float32))
    assert _syncs(lambda: host().to(DEVICE)) == {"to(device)": 1}
    assert _syncs(lambda: host().long().to(DEVICE)) == {"to(device)": 1}  # still a host tensor
    assert _syncs(lambda: host().to(DEVICE, non_blocking=True)) == {}
    assert _syncs(lambda: torch.empty(3, 4).copy_(on_device)) == {"copy_": 1}
    assert _syncs(lambda: torch.empty(3, 4).copy_(on_device, non_blocking=True)) == {}
    assert _syncs(lambda: torch.as_tensor([1, 2], device=DEVICE)) == {"as_tensor(device=)": 1}
    assert _syncs(lambda: on_device.to(DEVICE)) == {}  # already there: no copy on a GPU either
    assert _syncs(lambda: on_device.to(torch.uint8)) == {}


def test_data_dependent_shapes_count_on_device_only(on_device):
    assert _syncs(lambda: on_device[on_device > 0]) == {"index(bool mask)": 1}
    assert _syncs(lambda: on_device.nonzero()) == {"nonzero": 1}
    labels = (on_device > 0).long().flatten()
    assert _syncs(lambda: torch.bincount(labels, minlength=3)) == {"bincount": 1}
    assert _syncs(lambda: torch.arange(5).nonzero()) == {}  # a host tensor: no device involved
    assert _syncs(lambda: torch.tensor(3.0).item()) == {}


def test_count_ops_counts_every_aten_op(on_device):
    from_numpy = torch.from_numpy
    total, syncs = count_ops(lambda: (on_device * 2 + 1).relu())
    assert (total, syncs) == (3, 0)
    one, _ = count_ops(lambda: on_device.sum())
    assert one == 1
    assert torch.from_numpy is from_numpy  # restored after counting
