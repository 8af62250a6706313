"""Command-line flags from a dataclass, built one way for every job.

Each field ``some_name`` becomes ``--some-name``; the field's annotation decides the parsing:
``bool`` is a switch, ``int`` / ``float`` / ``str`` (optionally ``| None``) take one value, and
``tuple[int, ...]`` takes ``A,B,...``. Help texts come from a ``{field: text}`` dict, so the
dataclass stays the single place that names and defaults every option.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

_SCALARS = {"int": int, "float": float, "str": str}


def int_tuple(text: str) -> tuple[int, ...]:
    """``"2048,512"`` -> ``(2048, 512)``; ``"-2,-1"`` -> ``(-2, -1)``."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def flag_parser(annotation: str) -> Any:
    """The argparse ``type`` (or ``bool``) for a dataclass field annotation string."""
    base = annotation.split("|")[0].strip()
    if base == "bool":
        return bool
    if base.startswith("tuple[int"):
        return int_tuple
    if base not in _SCALARS:
        raise TypeError(f"no flag type for annotation {annotation!r}")
    return _SCALARS[base]


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    help_texts: Mapping[str, str],
    *,
    skip: Iterable[str] = (),
    required_note: str = "",
) -> None:
    """Add one ``--kebab-case`` flag per field of ``cls`` (except ``skip``).

    Args:
        parser: where to add them; its ``argument_default`` applies (``SUPPRESS`` keeps unset
            flags out of the namespace so a config file can fill them).
        cls: a dataclass.
        help_texts: help per field name; the default is appended where the text lacks one.
        skip: fields without a flag.
        required_note: appended to the help of fields without a default (" (required)" when
            empty, and argparse enforces them; otherwise the caller checks).
    """
    skipped = set(skip)
    for field in dataclasses.fields(cls):
        if field.name in skipped:
            continue
        flag = "--" + field.name.replace("_", "-")
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        text = help_texts[field.name]
        if required:
            text += required_note or " (required)"
        elif "default" not in text:
            text += f" (default: {_shown(field.default)})"
        kind = flag_parser(str(field.type))
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=text)
            continue
        parser.add_argument(
            flag,
            type=kind,
            metavar=field.name.upper(),
            help=text,
            required=required and not required_note,
        )


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)
