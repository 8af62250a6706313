"""Command-line flags of every job: one help layout, and flags built from a dataclass.

:class:`JobHelpFormatter` is the ``formatter_class`` of every job's parser.
:func:`add_dataclass_flags` turns each field ``some_name`` into ``--some-name``; the field's
annotation decides the parsing: ``bool`` is a switch, ``int`` / ``float`` / ``str`` (optionally
``| None``) take one value, and ``tuple[int, ...]`` takes ``A,B,...``. Help texts come from a
``{field: text}`` dict, so the dataclass stays the single place that names and defaults every
option.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

_SCALARS = {"int": int, "float": float, "str": str}
_UNSHOWN = ("", None)  # defaults meaning "unset": not shown in the help


class JobHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; ends a flag's help with ``(required)`` or, where the
    default says something, ``(default: X)``.

    No default is shown for positionals, switches, ``None``, ``""`` or a help text that already
    names its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings:
            return text
        if action.required:
            return text if "required" in text else f"{text} (required)"
        default = action.default
        if (
            default is None
            or default is False
            or default is True
            or default == ""
            or default == argparse.SUPPRESS
            or "default" in text.lower()
            or action.nargs == 0
        ):
            return text
        return f"{text} (default: %(default)s)"


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
        help_texts: help per field name; the default is appended where the text lacks one
            (not for ``None``, ``""`` or ``False``: unset means the feature is off).
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
        kind = flag_parser(str(field.type))
        if required:
            text += required_note or " (required)"
        elif kind is not bool and "default" not in text and field.default not in _UNSHOWN:
            text += f" (default: {_shown(field.default)})"
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
