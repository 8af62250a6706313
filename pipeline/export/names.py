"""Safe, collision-free output names for untrusted image ids, and a guarded output-path join.

Image ids come from file names, tar member names and Parquet rows nobody here wrote: they may hold
``../``, absolute paths, backslashes, control characters or names that differ only in case. An
export never uses them as paths. Each id maps to ``<readable stem>-<hash>``: the stem keeps only
``[A-Za-z0-9._-]`` (never leading dots), the hash is 12 hex digits of SHA-1 of the full id. The
name depends on the id alone, so shards can be exported in parallel or re-run and still agree;
distinct ids get distinct names (a 48-bit hash clash is detected when the mapping is written).
"""

from __future__ import annotations

import hashlib
import re

from pipeline import storage

MAX_STEM_CHARS = 80
HASH_CHARS = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def safe_name(image_id: str) -> str:
    """Output file stem (no extension) for an untrusted image id.

    Example: ``"shards/a.tar/../../x.jpg"`` -> ``"shards_a.tar_.._.._x-<hash>"``; only the
    characters ``[A-Za-z0-9._-]`` appear, and never as a leading dot.
    """
    stem = image_id.rsplit(".", 1)[0] if "." in image_id.rsplit("/", 1)[-1] else image_id
    stem = _UNSAFE.sub("_", stem).lstrip("._-")[-MAX_STEM_CHARS:].lstrip(".") or "image"
    digest = hashlib.sha1(image_id.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{stem}-{digest}"


def out_uri(out: str, *parts: str) -> str:
    """``out/part/part/...`` after checking that every part is a plain, safe file name.

    Raises:
        ValueError: a part is empty, ``.``/``..``, starts with a dot, or holds a character outside
            ``[A-Za-z0-9._-]`` (so the result can never leave ``out``).
    """
    for part in parts:
        if not _SAFE_PART.match(part) or part in (".", ".."):
            raise ValueError(f"unsafe output path component {part!r}")
    uri = storage.join(out, *parts)
    if not storage.is_within(uri, out):  # defence in depth; cannot happen for safe parts
        raise ValueError(f"{uri} is outside {out}")
    return uri


def check_unique(names: dict[str, str]) -> None:
    """Raise ``ValueError`` when two different ids share an output name (``{id: name}``)."""
    seen: dict[str, str] = {}
    for image_id, name in names.items():
        other = seen.setdefault(name, image_id)
        if other != image_id:
            raise ValueError(f"ids {other!r} and {image_id!r} both map to {name!r}")
