"""Filesystems from URIs (local, ``s3://``, ``gs://``, any fsspec protocol) and small-object I/O.

The only module that reads endpoint settings from the environment. S3 uses the standard AWS
variables: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (S3-compatible servers),
``AWS_DEFAULT_REGION`` / ``AWS_REGION``, ``AWS_MAX_ATTEMPTS`` (attempts per S3 request,
default ``S3_MAX_ATTEMPTS``: throttling (503 SlowDown), 5xx and connection errors are retried
with the AWS SDK's standard exponential backoff and jitter); credentials (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, profiles, instance roles) are resolved by
the AWS SDK itself and never pass through this code, flags, logs or pickles.

URIs returned by this module are ``scheme://bucket/key`` for remote stores and absolute paths
for local files.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import time
import uuid
from urllib.parse import urlparse

import pyarrow.fs as pafs

logger = logging.getLogger(__name__)

_GLOB_CHARS = "*?["
READ_ATTEMPTS = 5  # whole-object reads, on top of the SDK's per-request retries
READ_BACKOFF_S = 0.1  # doubled after each failed attempt
S3_MAX_ATTEMPTS = 10  # the SDK's default of 3 gives up during a burst of SlowDown replies


def split_uri(uri: str) -> tuple[str, str]:
    """Split into ``(scheme, path)``; local paths become ``("file", absolute path)``."""
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        if scheme == "file":
            return "file", os.path.abspath(rest)
        return scheme.lower(), rest.strip("/")
    return "file", os.path.abspath(os.path.expanduser(uri))


def make_uri(scheme: str, path: str) -> str:
    """Inverse of :func:`split_uri`."""
    return path if scheme == "file" else f"{scheme}://{path}"


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with ``/``."""
    base = uri.rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts)])


def is_within(child: str, parent: str) -> bool:
    """True when ``child`` equals ``parent`` or lies below it (glob parts of parent ignored)."""
    c_scheme, c_path = split_uri(child)
    p_scheme, p_path = split_uri(_glob_base(parent))
    if c_scheme != p_scheme:
        return False
    c_path, p_path = c_path.rstrip("/"), p_path.rstrip("/")
    return c_path == p_path or c_path.startswith(p_path + "/")


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a URI; filesystems are cached per process."""
    scheme, path = split_uri(uri)
    if scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        return _s3(endpoint, region, _max_attempts()), path
    return _other(scheme), path


def s3_client():
    """A botocore S3 client for the requests pyarrow cannot make (conditional writes), built from
    the same ``AWS_*`` variables as :func:`filesystem_for`; cached per process."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    return _botocore_s3(endpoint, region, _max_attempts())


@functools.lru_cache(maxsize=8)
def _botocore_s3(endpoint: str | None, region: str | None, max_attempts: int):
    import botocore.config
    import botocore.session

    config = botocore.config.Config(retries={"max_attempts": max_attempts, "mode": "standard"})
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=region or "us-east-1", config=config
    )


def _max_attempts() -> int:
    text = os.environ.get("AWS_MAX_ATTEMPTS", "")
    return int(text) if text.strip().isdigit() and int(text) >= 1 else S3_MAX_ATTEMPTS


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str | None, max_attempts: int) -> pafs.FileSystem:
    kwargs: dict[str, object] = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts)
    }
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=8)
def _other(scheme: str) -> pafs.FileSystem:
    if scheme == "file":
        return pafs.LocalFileSystem()
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem()
    import fsspec  # any other protocol fsspec knows (az://, hf://, ...)

    return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))


def _glob_base(uri: str) -> str:
    """The part of ``uri`` before its first path component holding a glob character."""
    if not any(ch in uri for ch in _GLOB_CHARS):
        return uri
    scheme, path = split_uri(uri)
    parts = path.split("/")
    base: list[str] = []
    for part in parts:
        if any(ch in part for ch in _GLOB_CHARS):
            break
        base.append(part)
    return make_uri(scheme, "/".join(base) or "/")


def input_root(uri: str) -> str:
    """Folder that image ids are relative to: the glob base, a folder, or a file's parent."""
    base = _glob_base(uri)
    fs, path = filesystem_for(base)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        scheme, _ = split_uri(base)
        return make_uri(scheme, path.rsplit("/", 1)[0])
    return base.rstrip("/")


def list_files(uri: str) -> list[str]:
    """All files under a folder/prefix, matching a glob, or the single file named; sorted.

    Raises:
        FileNotFoundError: nothing exists at ``uri`` (or its glob base).
    """
    scheme, _ = split_uri(uri)
    base = _glob_base(uri)
    fs, base_path = filesystem_for(base)
    info = fs.get_file_info(base_path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{base} does not exist or is not readable.")
    if info.type == pafs.FileType.File:
        paths = [base_path]
    else:
        selector = pafs.FileSelector(base_path, recursive=True)
        paths = [i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
    if base != uri:
        pattern = split_uri(uri)[1]
        paths = [p for p in paths if fnmatch.fnmatchcase(p, pattern)]
    return sorted(make_uri(scheme, p) for p in paths)


def read_bytes(uri: str) -> bytes:
    """Whole object as bytes.

    Besides the SDK's own retries (``AWS_MAX_ATTEMPTS``), a failed or short read is retried
    here with exponential backoff: after a throttled ranged GET the AWS SDK's retry reuses a
    response buffer that already holds the error body and fails ("Failed to flush response
    stream") or returns too few bytes.

    Raises:
        FileNotFoundError: no such object (not retried).
        OSError: still failing after ``READ_ATTEMPTS`` attempts.
    """
    fs, path = filesystem_for(uri)
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            with fs.open_input_file(path) as f:
                size, data = f.size(), f.read()
            if len(data) == size:
                return data
            problem: str | OSError = f"short read ({len(data)} of {size} bytes)"
        except FileNotFoundError:
            raise
        except OSError as e:
            if attempt == READ_ATTEMPTS:
                raise
            problem = e
        logger.warning("read %s, attempt %d/%d: %s", uri, attempt, READ_ATTEMPTS, problem)
        time.sleep(READ_BACKOFF_S * 2 ** (attempt - 1))
    raise OSError(f"{uri}: {problem} after {READ_ATTEMPTS} attempts")


def exists(uri: str) -> bool:
    """True when a file exists at ``uri``."""
    fs, path = filesystem_for(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` so readers never see a partial object.

    Local files are written to a hidden temporary name in the same folder and renamed; on object
    stores a single upload only becomes visible once complete.
    """
    fs, path = filesystem_for(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if split_uri(uri)[0] != "file":
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[1]}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def delete_file(uri: str) -> None:
    """Delete one file; missing is fine."""
    fs, path = filesystem_for(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def delete_tree(uri: str) -> None:
    """Delete a folder/prefix and everything below it; missing is fine."""
    fs, path = filesystem_for(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir_contents(path, missing_dir_ok=True)


def check_writable(uri: str) -> None:
    """Write and delete a probe object under ``uri``.

    Raises:
        OSError: the location cannot be written.
    """
    probe = join(uri, f"_probe-{uuid.uuid4().hex}")
    fs, path = filesystem_for(probe)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(b"ok")
    fs.delete_file(path)
