"""Count the ATen ops and the host round-trips of a function, on any device (CPU included).

``count_ops(fn) -> (total_ops, sync_ops)`` runs ``fn()`` once and returns:

* ``total_ops``: every ATen op dispatched (a ``TorchDispatchMode`` sees each op below autograd;
  on a GPU each one on device tensors is at least one kernel launch);
* ``sync_ops``: the calls that would make the host wait for the device in a GPU run (each one
  drains the stream there).

On a CPU every tensor is on the host, so the counter follows where each tensor *would* live in
a GPU run. Host tensors are the ones made during the call from host data (``torch.from_numpy``,
``torch.tensor`` / ``as_tensor`` / ``zeros`` / ``arange``... without ``device=``), copies
``.cpu()`` / ``.to("cpu")``, pinned tensors, and the results of ops whose tensor inputs are all
host tensors. Every other tensor (model weights, constants made before the call, results of
device tensors) is a device tensor. A round-trip is then:

* a device value read on the host: ``.item()``, ``bool()`` / ``int()`` / ``float()``,
  ``torch.equal`` (ATen ``_local_scalar_dense``, ``equal``, ``is_nonzero``);
* a blocking copy between host and device: ``.cpu()``, ``.tolist()``, ``.numpy()`` of a device
  tensor, ``.to("cpu")``, ``.to(device)`` / ``.cuda()`` of a host tensor, ``dst.copy_(src)``
  across them, all unless ``non_blocking=True``; ``torch.tensor`` / ``as_tensor`` of host data
  with a ``device=``;
* a device op whose output shape depends on the data: ``nonzero``, ``masked_select``,
  ``unique``, ``bincount``, ``repeat_interleave`` of a tensor, indexing with a boolean mask.

* an explicit wait: ``torch.cuda.synchronize()`` and ``torch.cuda.Event.synchronize()`` (never
  called on the CPU, but counted if they are).

Not seen: stream waits and implicit syncs inside CUDA kernels' launch (on CUDA,
``torch.cuda.set_sync_debug_mode("warn")`` reports the real ones, see ``bench/gpu_meters.py``).

``OpCounter`` is the context manager behind it; its ``ops`` and ``syncs`` (``Counter`` by op
name) say what was counted. Tests import it as ``bench.dispatch_count``::

    from bench.dispatch_count import count_ops

    total, syncs = count_ops(lambda: predictor.predict(images, sizes))
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

WAITS = {
    "synchronize": (torch.cuda, "synchronize"),
    "event.synchronize": (torch.cuda.Event, "synchronize"),
}
# ATen ops that read a device value on the host, or whose output size depends on the data.
# Under ``torch.inference_mode`` ``item`` reaches the mode itself (its ``_local_scalar_dense``
# is then not seen); outside it, ``_local_scalar_dense`` does.
SYNC_ATEN = {
    "_local_scalar_dense",  # .item(), bool(t), int(t), float(t)
    "item",
    "equal",
    "is_nonzero",
    "nonzero",
    "masked_select",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "bincount",
}
BOOL_MASK_ATEN = {"index", "index_put", "index_put_", "_index_put_impl_"}
TO_HOST = {"cpu", "tolist", "numpy", "__array__"}  # from a device tensor: a blocking copy
HOST_FACTORIES = {
    "tensor", "as_tensor", "zeros", "ones", "empty", "full", "arange", "linspace", "eye",
    "rand", "randn", "randint",
}  # fmt: skip


def _name(func: Any) -> str:
    """``aten.nonzero.default`` -> ``nonzero``; a Python function -> its ``__name__``."""
    packet = getattr(func, "overloadpacket", None)
    return getattr(packet, "__name__", None) or getattr(func, "__name__", str(func))


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class HostTensors:
    """Tensors that live on the host in a GPU run, by identity (weakly referenced)."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref] = {}

    def add(self, tree: Any) -> None:
        for t in _tensors(tree):
            key = id(t)
            self._refs[key] = weakref.ref(t, lambda _ref, key=key: self._refs.pop(key, None))

    def has(self, t: torch.Tensor) -> bool:
        ref = self._refs.get(id(t))
        if ref is not None and ref() is t:
            return True
        return t.device.type == "cpu" and torch.cuda.is_available() and t.is_pinned()


def _blocking(args: tuple, kwargs: dict, position: int = 1) -> bool:
    """``non_blocking`` is not set (keyword, or a positional ``True`` after ``position``)."""
    return not (kwargs.get("non_blocking") or any(a is True for a in args[position:]))


def _to_target(args: tuple, kwargs: dict) -> str | torch.Tensor | torch.device | None:
    """The device ``Tensor.to`` moves to (a string, device or tensor), None for a dtype only."""
    if kwargs.get("device") is not None:
        return kwargs["device"]
    return next((a for a in args[1:] if isinstance(a, str | torch.device | torch.Tensor)), None)


class _Placement(TorchFunctionMode):
    """Python-level calls: which results are host tensors, and the host/device copies."""

    def __init__(self, host: HostTensors, syncs: Counter) -> None:
        super().__init__()
        self.host = host
        self.syncs = syncs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = _tensors((args, kwargs))
        on_host = all(self.host.has(t) for t in inputs)  # True without tensor inputs
        sync, result_on_host = self._classify(_name(func), args, kwargs, on_host)
        if sync:
            self.syncs[sync] += 1
        out = func(*args, **kwargs)
        if result_on_host:
            self.host.add(out)
        return out

    def _classify(self, name: str, args: tuple, kwargs: dict, on_host: bool) -> tuple:
        """(the round-trip's name or None, whether the result is a host tensor)."""
        if name in TO_HOST:
            return (None if on_host else name), True
        if name == "to":
            target = _to_target(args, kwargs)
            if target is None:
                return None, on_host
            if isinstance(target, torch.Tensor):
                to_host = self.host.has(target)
            else:
                to_host = isinstance(target, str) and target.startswith("cpu")
            moved = on_host != to_host and _blocking(args, kwargs)
            return ("to(cpu)" if to_host else "to(device)") if moved else None, to_host
        if name == "cuda":
            return ("cuda" if on_host and _blocking(args, kwargs, 0) else None), False
        if name == "copy_":
            dst, src = args[0], args[1]
            crossing = self.host.has(dst) != self.host.has(src) and _blocking(args, kwargs, 2)
            return ("copy_" if crossing else None), False
        if name == "pin_memory":
            return None, True
        if name in HOST_FACTORIES and kwargs.get("device") is not None:
            device = kwargs["device"]
            to_host = isinstance(device, str) and device.startswith("cpu")
            copies = name in ("tensor", "as_tensor") and on_host and not to_host
            return (f"{name}(device=)" if copies else None), to_host
        return None, on_host


class _AtenOps(TorchDispatchMode):
    """Every ATen op, and the data-dependent or host-read ones on device tensors."""

    def __init__(self, host: HostTensors, ops: Counter, syncs: Counter) -> None:
        super().__init__()
        self.host = host
        self.ops = ops
        self.syncs = syncs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = _name(func)
        if name == "is_pinned":  # asked by ``HostTensors.has``, not by the code counted
            return func(*args, **(kwargs or {}))
        self.ops[name] += 1
        if not all(self.host.has(t) for t in _tensors(args)):
            repeats = name == "repeat_interleave" and isinstance(args[0], torch.Tensor)
            if name in SYNC_ATEN or repeats:
                self.syncs[name] += 1
            elif name in BOOL_MASK_ATEN and any(
                t.dtype in (torch.bool, torch.uint8) for t in _tensors(args[1:2])
            ):
                self.syncs[f"{name}(bool mask)"] += 1
        return func(*args, **(kwargs or {}))


class OpCounter:
    """Context manager: ``ops`` / ``syncs`` are ``Counter``s of the op names seen inside it
    (see the module docstring); ``total`` and ``sync_total`` their sums."""

    def __init__(self) -> None:
        self.ops: Counter = Counter()
        self.syncs: Counter = Counter()
        self.host = HostTensors()
        self._modes = (_Placement(self.host, self.syncs), _AtenOps(self.host, self.ops, self.syncs))
        self._from_numpy = torch.from_numpy
        self._waits = {name: getattr(*where) for name, where in WAITS.items()}

    def __enter__(self) -> OpCounter:
        original = self._from_numpy

        def from_numpy(array):  # not a torch function: no mode sees it
            out = original(array)
            self.host.add(out)
            return out

        torch.from_numpy = from_numpy
        for name, (owner, attr) in WAITS.items():
            setattr(owner, attr, self._counted_wait(name, self._waits[name]))
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        torch.from_numpy = self._from_numpy
        for name, (owner, attr) in WAITS.items():
            setattr(owner, attr, self._waits[name])

    def _counted_wait(self, name: str, wait: Callable) -> Callable:
        """``wait`` (a synchronize function or method), counted as a round-trip ``name``."""

        def counted(*args, **kwargs):
            self.syncs[name] += 1
            return wait(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        """ATen ops dispatched."""
        return sum(self.ops.values())

    @property
    def sync_total(self) -> int:
        """Host round-trips."""
        return sum(self.syncs.values())


def count_ops(fn: Callable[[], object]) -> tuple[int, int]:
    """``(total ATen ops, host round-trips)`` of one call of ``fn()`` (see the module docstring)."""
    with OpCounter() as counter:
        fn()
    return counter.total, counter.sync_total
