"""What every model family's config shares: the checkpoint format version and JSON loading."""

from __future__ import annotations

import dataclasses
from typing import Any

from zegclip.clip import ClipSpec

FORMAT_VERSION = 1


def config_from_dict(cls: type, data: dict[str, Any], *, tuple_fields: tuple[str, ...]) -> Any:
    """Rebuild a model-family config dataclass from its ``to_dict`` JSON.

    Raises:
        ValueError: newer format version or fields ``cls`` does not have.
    """
    data = dict(data)
    version = data.pop("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint format {version} is newer than this code ({FORMAT_VERSION}); upgrade."
        )
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    data["clip"] = ClipSpec(**data.get("clip", {}))
    for key in tuple_fields:
        if key in data:
            data[key] = tuple(data[key])
    return cls(**data)
