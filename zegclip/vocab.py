"""Vocabulary files: one class per line, optional comma-separated synonyms, ``#`` comments.

Pure Python (no torch) so the job driver can validate a vocabulary before anything heavy loads.

Example::

    # street scene
    car, automobile
    person, pedestrian
    road
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_NAME_CHARS = 120  # CLIP's 77-token context fits ~40 words; longer entries are mistakes
MAX_CLASSES = 65534  # uint16 label maps keep 65535 for "unlabelled"

# Label id of unlabelled / ignored pixels in uint8 label maps (mmseg's convention); class ids
# are 0..C-1. Vocabularies over 255 classes use uint16 maps with 65535 instead.
IGNORE_INDEX = 255


class VocabularyError(ValueError):
    """A vocabulary that cannot be used; the message says which line and how to fix it."""


@dataclass(frozen=True)
class Vocabulary:
    """Class names with synonyms.

    Attributes:
        synonyms: one tuple per class; the first entry is the display name.
    """

    synonyms: tuple[tuple[str, ...], ...]

    @property
    def names(self) -> list[str]:
        """Display names, one per class, in label-index order."""
        return [entry[0] for entry in self.synonyms]

    def __len__(self) -> int:
        return len(self.synonyms)

    @classmethod
    def from_names(cls, names: Iterable[str | Sequence[str]]) -> Vocabulary:
        """Build from plain names or per-class synonym lists, validating as a file would be."""
        rows = [(n,) if isinstance(n, str) else tuple(n) for n in names]
        lines = [", ".join(r) for r in rows]
        return parse_vocabulary(lines, source="<list>")


def parse_vocabulary(lines: Iterable[str], *, source: str = "<vocabulary>") -> Vocabulary:
    """Parse vocabulary lines.

    Raises:
        VocabularyError: empty vocabulary, empty/over-long/duplicate names (case-insensitive,
            across synonyms of all classes) or more than ``MAX_CLASSES`` classes.
    """
    seen: dict[str, int] = {}
    classes: list[tuple[str, ...]] = []
    for lineno, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        entry = tuple(part.strip() for part in text.split(","))
        for name in entry:
            _check_name(name, lineno, source, seen)
            seen[name.casefold()] = lineno
        classes.append(entry)
    if not classes:
        raise VocabularyError(f"{source}: no classes found; write one class name per line.")
    if len(classes) > MAX_CLASSES:
        raise VocabularyError(f"{source}: {len(classes)} classes; at most {MAX_CLASSES} supported.")
    return Vocabulary(tuple(classes))


def _check_name(name: str, lineno: int, source: str, seen: dict[str, int]) -> None:
    where = f"{source}:{lineno}"
    if not name:
        raise VocabularyError(f"{where}: empty name (check for a stray or trailing comma).")
    if len(name) > MAX_NAME_CHARS:
        raise VocabularyError(
            f"{where}: name of {len(name)} characters; keep names under {MAX_NAME_CHARS}."
        )
    if name.casefold() in seen:
        raise VocabularyError(
            f"{where}: '{name}' already appears on line {seen[name.casefold()]}; "
            "each name or synonym may appear once."
        )


def load_vocabulary(path: str | Path) -> Vocabulary:
    """Read a local vocabulary file (see module docstring for the format).

    Raises:
        FileNotFoundError: the file does not exist.
        VocabularyError: see :func:`parse_vocabulary`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file {path} not found; pass --vocab PATH.")
    return parse_vocabulary(path.read_text(encoding="utf-8").splitlines(), source=str(path))
