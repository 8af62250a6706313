"""Count ATen ops and would-be host round-trips of a piece of code, on any device (CPU tests).

On a GPU every ATen op is (at least) one kernel launch, and some calls make the host wait for
the device ("round-trips": the stream drains, the GPU idles). On the CPU nothing waits, so
:class:`OpCounter` counts the calls that *would* wait on CUDA:

* ``aten._local_scalar_dense`` (``aten.item`` / ``aten.is_nonzero`` under inference mode) and
  ``aten.equal``: ``.item()``, ``bool(t)``, ``int(t)``, ``float(t)``, ``if t:``, ``torch.equal``;
* ops whose output shape depends on the data (CUDA must read a size back first):
  :data:`DATA_DEPENDENT_OPS` (``nonzero``, ``masked_select``, ``unique``, ``bincount``, boolean-mask
  indexing, ...);
* tensors made from host data (``aten.lift_fresh``: ``torch.tensor([...])``,
  ``torch.from_numpy``): on CUDA a host-to-device copy, blocking from pageable memory. The
  predictor's one input upload per image group is among them although it is pinned and
  non-blocking on CUDA (so this over-counts: an upper bound);
* device-to-host reads made at the Python level: ``Tensor.numpy()`` and ``Tensor.tolist()`` (on
  CUDA preceded by a copy to the host; one ``.cpu().numpy()`` counts once) and
  ``torch.cuda.synchronize`` / ``Event.synchronize`` (never called on the CPU).

Not counted: ``Tensor.to(device)`` / ``.cpu()`` themselves (no-ops on the CPU, so invisible here;
the predictor's copies are pinned and non-blocking on CUDA by construction) and work outside
the ``with`` block. ``bench/bench_gpu.py`` on a GPU counts real syncs with
``torch.cuda.set_sync_debug_mode``.
"""

from __future__ import annotations

from collections import Counter
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

DATA_DEPENDENT_OPS = frozenset(
    {
        aten.nonzero.default,
        aten.nonzero_static.default,
        aten.masked_select.default,
        aten._unique.default,
        aten._unique2.default,
        aten.unique_dim.default,
        aten.unique_consecutive.default,
        aten.bincount.default,
        aten.repeat_interleave.Tensor,
        aten.argwhere.default,
    }
)
# ``item`` / ``is_nonzero`` reach the mode themselves under ``torch.inference_mode`` (their
# ``_local_scalar_dense`` is then not seen), ``_local_scalar_dense`` outside it.
SYNC_OPS = frozenset(
    {
        aten._local_scalar_dense.default,
        aten.item.default,
        aten.is_nonzero.default,
        aten.equal.default,
        aten.lift_fresh.default,
    }
)


class OpCounter(TorchDispatchMode):
    """``with OpCounter() as c: ...`` then ``c.ops`` (ATen calls), ``c.round_trips`` and
    ``c.syncs`` (a Counter naming each kind of round-trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.syncs: Counter[str] = Counter()
        self._patches = [
            mock.patch.object(torch.Tensor, "numpy", self._wrap("numpy", torch.Tensor.numpy)),
            mock.patch.object(torch.Tensor, "tolist", self._wrap("tolist", torch.Tensor.tolist)),
            mock.patch.object(
                torch.cuda, "synchronize", self._wrap("synchronize", torch.cuda.synchronize)
            ),
            mock.patch.object(
                torch.cuda.Event,
                "synchronize",
                self._wrap("event.synchronize", torch.cuda.Event.synchronize),
            ),
        ]

    @property
    def round_trips(self) -> int:
        """All counted host waits (see the module docstring)."""
        return sum(self.syncs.values())

    def _wrap(self, name: str, method):
        def counted(*args, **kwargs):
            self.syncs[name] += 1
            return method(*args, **kwargs)

        return counted

    def __enter__(self):
        for patch in self._patches:
            patch.start()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for patch in reversed(self._patches):
                patch.stop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if func in SYNC_OPS or func in DATA_DEPENDENT_OPS:
            self.syncs[str(func.overloadpacket.__name__)] += 1
        elif func is aten.index.Tensor and _has_bool_index(args):
            self.syncs["index(bool mask)"] += 1
        return func(*args, **(kwargs or {}))


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(i is not None and i.dtype == torch.bool for i in indices)
