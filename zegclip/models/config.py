"""What every model family's config shares: the checkpoint format version and JSON round trip."""

from __future__ import annotations

import dataclasses
from typing import Any, Self

from zegclip.clip import ClipSpec

FORMAT_VERSION = 1


class FamilyConfig:
    """Mixin of the frozen family-config dataclasses: ``to_dict`` / ``from_dict`` JSON round trip.

    The JSON stores ``format_version``, every field (tuples as lists) and the :class:`ClipSpec` as
    a nested dict; fields annotated ``tuple[...]`` become tuples again on the way back.
    """

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: newer format version or fields ``cls`` does not have.
        """
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"checkpoint format {version} is newer than this code ({FORMAT_VERSION}); upgrade."
            )
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        unknown = set(data) - {f.name for f in fields}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        data["clip"] = ClipSpec(**data.get("clip", {}))
        for f in fields:
            if str(f.type).startswith("tuple") and f.name in data:
                data[f.name] = tuple(data[f.name])
        return cls(**data)
