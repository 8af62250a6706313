"""Fetch model weights once per node: local paths as-is, remote URIs into a shared disk cache.

Several Ray actors on one node start at the same time and each asks for the same checkpoint. The
first one to take an exclusive ``fcntl.flock`` on ``<cache>/<key>.lock`` downloads the file to a
temporary name in the same directory and ``os.replace``-s it into place (atomic on POSIX); the
others block on the lock, then find the finished file and reuse it. A crashed downloader releases
the lock with its process, and its partial file is removed by the next holder.

The cache key hashes the URI together with the remote ETag/size (when the filesystem reports them),
so a re-uploaded object gets a fresh entry instead of a stale hit. The original file name is kept
(``<cache>/<key>/<name>``): loaders pick the format from the suffix (``.safetensors``, ``.pt``).

Credentials are never passed in here: fsspec's filesystems read them from the environment
(s3fs: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_ENDPOINT_URL``, IRSA web identity,
instance profiles; gcsfs: workload identity). Logs and error messages show a URI without its
query string or user info, since pre-signed URLs carry credentials there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import fsspec

logger = logging.getLogger(__name__)

_DEFAULT_FLAGS = "--checkpoint / --clip-weights"
_VERSION_FIELDS = ("ETag", "etag", "generation", "Last-Modified", "size")
_CHUNK_BYTES = 8 << 20
_PARTIAL_PREFIX = ".part-"
_DIGEST_SUFFIX = ".sha256"


def fetch_cached(
    uri: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    flag: str | None = None,
) -> Path:
    """Return a local path holding the weights at ``uri``, downloading them at most once per node.

    Args:
        uri: A local path, a ``file://`` URI, or any fsspec URI (``s3://``, ``gs://``,
            ``http(s)://``, ...).
        cache_dir: Where remote files are cached; defaults to ``$ZEGCLIP_CACHE`` or
            ``~/.cache/zegclip``. Must be a local filesystem that supports ``flock``.
        sha256: Expected hex digest of the file. When omitted, a ``<uri>.sha256`` sidecar (first
            token of the file, as ``sha256sum`` writes it) is used if the remote has one.
        flag: The CLI flag the operator should fix, named in error messages.

    Returns:
        Path of the file: ``uri`` itself for local files, else ``<cache_dir>/<key>/<name>``.

    Raises:
        FileNotFoundError: The file does not exist (locally or remotely).
        ValueError: The file's sha256 does not match the expected digest; nothing is cached.
    """
    hint = flag or _DEFAULT_FLAGS
    local = _local_path(uri)
    if local is not None:
        return _check_local(local, uri, sha256=sha256, hint=hint)
    return _fetch_remote(uri, _resolve_cache_dir(cache_dir), sha256=sha256, hint=hint)


def redact_uri(uri: str) -> str:
    """Return ``uri`` without user info, query string and fragment, for logs and messages."""
    parts = urlsplit(uri)
    if not parts.scheme:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 digest of a local file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(urlsplit(uri).path)
    if "://" in uri:
        return None
    return Path(uri).expanduser()


def _check_local(path: Path, uri: str, *, sha256: str | None, hint: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {uri!r} (fix {hint})")
    sidecar = path.with_name(path.name + _DIGEST_SUFFIX)
    expected = sha256 or (_parse_digest(sidecar.read_text(), uri) if sidecar.is_file() else None)
    if expected is not None:
        _verify(sha256_file(path), expected, uri, hint=hint)
    return path


def _resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get("ZEGCLIP_CACHE") or Path.home() / ".cache" / "zegclip"
    path = Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fetch_remote(uri: str, cache_dir: Path, *, sha256: str | None, hint: str) -> Path:
    shown = redact_uri(uri)
    # A fresh instance per fetch: picks up the current environment's credentials and endpoint.
    fs, remote_path = fsspec.core.url_to_fs(uri, skip_instance_cache=True)
    info = _remote_info(fs, remote_path, uri, hint=hint)
    key = _cache_key(uri, info)
    target = cache_dir / key / _file_name(uri)
    if _is_cached(target, sha256, uri, hint=hint):
        logger.debug("weights cache hit for %s: %s", shown, target)
        return target
    with _exclusive_lock(cache_dir / f"{key}.lock"):
        if _is_cached(target, sha256, uri, hint=hint):  # another process finished meanwhile
            return target
        expected = sha256 or _remote_sidecar_digest(uri)
        logger.info("downloading weights %s (%s bytes) to %s", shown, info.get("size"), target)
        _download_atomic(fs, remote_path, target, expected, uri, hint=hint)
    return target


def _remote_info(fs: fsspec.AbstractFileSystem, path: str, uri: str, *, hint: str) -> dict:
    with _remote_errors(uri, hint=hint):
        return fs.info(path)


@contextlib.contextmanager
def _remote_errors(uri: str, *, hint: str) -> Iterator[None]:
    """Re-raise I/O errors with an operator hint and without the URI's query string."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"weights not found at {redact_uri(uri)!r} (fix {hint})") from None
    except OSError as e:
        raise OSError(
            f"cannot read weights at {redact_uri(uri)!r}: {type(e).__name__}"
            f" (check the credentials in the environment, the endpoint, or {hint})"
        ) from _safe_cause(e, uri)


def _safe_cause(error: BaseException, uri: str) -> BaseException | None:
    """Keep the original exception as the cause unless its text could leak the URI's secrets."""
    parts = urlsplit(uri)
    secret_bits = [s for s in (parts.query, parts.username, parts.password) if s]
    return None if any(bit in str(error) for bit in secret_bits) else error


def _cache_key(uri: str, info: dict) -> str:
    fields = [uri] + [f"{name}={info[name]}" for name in _VERSION_FIELDS if info.get(name)]
    return hashlib.sha256("\n".join(fields).encode()).hexdigest()[:32]


def _file_name(uri: str) -> str:
    name = urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1]
    return name or "weights"


def _is_cached(target: Path, sha256: str | None, uri: str, *, hint: str) -> bool:
    """True if ``target`` exists; checks it against ``sha256`` using the digest stored at write."""
    if not target.is_file():
        return False
    if sha256 is not None:
        stored = target.with_name(target.name + _DIGEST_SUFFIX)
        actual = stored.read_text().strip() if stored.is_file() else sha256_file(target)
        _verify(actual, sha256, uri, hint=hint)
    return True


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)  # blocks while another process downloads
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def _remote_sidecar_digest(uri: str) -> str | None:
    parts = urlsplit(uri)
    sidecar = urlunsplit(parts._replace(path=parts.path + _DIGEST_SUFFIX))
    fs, path = fsspec.core.url_to_fs(sidecar, skip_instance_cache=True)
    try:
        text = fs.cat_file(path).decode()
    except (FileNotFoundError, PermissionError):
        # S3 answers 403, not 404, for a missing key when the role may not list the bucket.
        return None
    return _parse_digest(text, uri + _DIGEST_SUFFIX)


def _parse_digest(text: str, source: str) -> str:
    tokens = text.split()
    digest = tokens[0].lower() if tokens else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"malformed sha256 in {redact_uri(source)!r}: expected 64 hex digits")
    return digest


def _download_atomic(
    fs: fsspec.AbstractFileSystem,
    remote_path: str,
    target: Path,
    expected: str | None,
    uri: str,
    *,
    hint: str,
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(_PARTIAL_PREFIX + "*"):  # left by a crashed holder
        stale.unlink(missing_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=_PARTIAL_PREFIX)
    os.close(fd)
    try:
        with _remote_errors(uri, hint=hint):
            fs.get_file(remote_path, partial)
        actual = sha256_file(partial)
        if expected is not None:
            _verify(actual, expected, uri, hint=hint)
        Path(partial + _DIGEST_SUFFIX).write_text(actual + "\n")
        os.replace(partial + _DIGEST_SUFFIX, target.with_name(target.name + _DIGEST_SUFFIX))
        os.replace(partial, target)
    finally:
        for leftover in (partial, partial + _DIGEST_SUFFIX):
            Path(leftover).unlink(missing_ok=True)


def _verify(actual: str, expected: str, uri: str, *, hint: str) -> None:
    if actual.lower() != expected.strip().lower():
        raise ValueError(
            f"sha256 mismatch for weights {redact_uri(uri)!r}: expected {expected.strip()},"
            f" got {actual}; the file is corrupt or the wrong file (fix {hint} or its digest)"
        )
