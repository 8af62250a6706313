"""Where an output lease lives: one small JSON object with an atomic create and compare-and-swap.

Both backends offer the same three calls: ``read`` (a :class:`Snapshot`), ``create`` (write only
if absent) and ``swap`` (write only if the object is still the version read); the last two
return the new version, or None when another writer got there first.

* **S3** and S3-compatible servers: ``create`` is ``PutObject`` with ``If-None-Match: *`` and
  ``swap`` is ``PutObject`` with ``If-Match: <ETag read>``. The server decides, so of any number
  of concurrent writers exactly one wins; the others get 412 ``PreconditionFailed`` (or 409
  ``ConditionalRequestConflict``). Ages are measured on the server's clock (``Date`` minus
  ``Last-Modified``), so client clock skew does not matter.
* **Local and mounted file systems**: ``create`` writes a temporary file and hard-links it to the
  lease name; ``link`` fails when the name exists, atomically, also on NFS. ``swap`` runs under
  a lock file taken by exclusive create (``O_CREAT | O_EXCL``): re-read, compare the content
  hash, replace by ``rename``. The lock is held for milliseconds; one left behind by a process
  that died inside that window is broken after ``LOCK_STALE_S``. Ages use the file's mtime
  against this machine's clock (keep the clocks of machines sharing a mount in sync).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from pipeline import storage

logger = logging.getLogger(__name__)

LOCK_WAIT_S = 30.0  # waiting for another process's swap (milliseconds normally)
LOCK_STALE_S = 60.0  # a lock file older than this was left by a dead process
LOST_RACE_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


@dataclass(frozen=True)
class Snapshot:
    """One version of the lease object.

    Attributes:
        body: the parsed JSON (``{"state": "unreadable"}`` when it does not parse).
        version: ETag (S3) or content hash (files); what ``swap`` compares.
        age_s: seconds since it was written, on the store's clock.
    """

    body: dict[str, Any]
    version: str
    age_s: float


def _parse(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        return {"state": "unreadable"}
    return body if isinstance(body, dict) else {"state": "unreadable"}


def _server_time(date: str) -> datetime:
    """The server's clock from a ``Date`` header; this machine's clock when it does not parse
    (a proxy may add a second ``Date``: botocore then joins both with ", ")."""
    for text in (date, date[:29]):  # "Thu, 03 Dec 2026 18:43:56 GMT" is 29 characters
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


@dataclass(frozen=True)
class S3Store:
    """The lease as an S3 object, written with conditional PUTs."""

    bucket: str
    key: str

    def read(self) -> Snapshot | None:
        """The current version, or None when there is no lease object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = storage.s3_client().get_object(Bucket=self.bucket, Key=self.key)
            data = reply["Body"].read()
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise OSError(f"s3://{self.bucket}/{self.key}: {e}") from e
        except BotoCoreError as e:
            raise OSError(f"s3://{self.bucket}/{self.key}: {e}") from e
        now = _server_time(reply["ResponseMetadata"]["HTTPHeaders"].get("date", ""))
        age = (now - reply["LastModified"]).total_seconds()
        return Snapshot(_parse(data), reply["ETag"], max(age, 0.0))

    def create(self, data: bytes) -> str | None:
        """Write ``data`` only if no lease object exists (``If-None-Match: *``)."""
        return self._put(data, IfNoneMatch="*")

    def swap(self, data: bytes, version: str) -> str | None:
        """Replace the lease only if it is still ``version`` (``If-Match: <ETag>``)."""
        return self._put(data, IfMatch=version)

    def _put(self, data: bytes, **condition: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = storage.s3_client().put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=data,
                ContentType="application/json",
                **condition,
            )
        except ClientError as e:
            if e.response["Error"]["Code"] in LOST_RACE_CODES:
                return None
            raise OSError(f"s3://{self.bucket}/{self.key}: {e}") from e
        except BotoCoreError as e:
            raise OSError(f"s3://{self.bucket}/{self.key}: {e}") from e
        return reply["ETag"]


@dataclass(frozen=True)
class FileStore:
    """The lease as a file on a local or mounted file system."""

    path: str

    def read(self) -> Snapshot | None:
        """The current version, or None when there is no lease file."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:  # one open file: content and mtime of the same version
            mtime, data = os.fstat(f.fileno()).st_mtime, f.read()
        digest = hashlib.sha256(data).hexdigest()
        return Snapshot(_parse(data), digest, max(time.time() - mtime, 0.0))

    def create(self, data: bytes) -> str | None:
        """Write ``data`` only if no lease file exists (temporary file + ``link``)."""
        tmp = self._temporary(data)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return None
        finally:
            os.unlink(tmp)
        return hashlib.sha256(data).hexdigest()

    def swap(self, data: bytes, version: str) -> str | None:
        """Replace the lease only if its content hash is still ``version`` (under the lock)."""
        with self._locked():
            current = self.read()
            if current is None or current.version != version:
                return None
            os.replace(self._temporary(data), self.path)
        return hashlib.sha256(data).hexdigest()

    def _temporary(self, data: bytes) -> str:
        parent = os.path.dirname(self.path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(self.path)}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``<lease>.lock`` (exclusive create) for the duration of one swap."""
        lock, nonce = self.path + ".lock", uuid.uuid4().hex.encode()
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                _break_if_stale(lock)
                if time.monotonic() > deadline:
                    raise OSError(f"{lock}: held for more than {LOCK_WAIT_S:.0f} s") from None
                time.sleep(0.02)
        with os.fdopen(fd, "wb") as f:
            f.write(nonce)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                if Path(lock).read_bytes() == nonce:
                    os.unlink(lock)


def _break_if_stale(lock: str) -> None:
    """Remove a lock file older than ``LOCK_STALE_S`` (its process died while holding it)."""
    try:
        seen = os.stat(lock)
    except FileNotFoundError:
        return
    if time.time() - seen.st_mtime <= LOCK_STALE_S:
        return
    aside = f"{lock}.broken-{uuid.uuid4().hex}"
    try:
        os.rename(lock, aside)  # atomic: of several breakers, one moves this very file
    except FileNotFoundError:
        return
    if os.stat(aside).st_ino != seen.st_ino:  # moved a fresh lock of someone else: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
    os.unlink(aside)
    logger.warning("removed %s: left by a process that died while holding it", lock)


def store_for(uri: str) -> S3Store | FileStore | None:
    """The lease store for a lease URI; None where no atomic write is implemented (gs://, ...)."""
    scheme, path = storage.split_uri(uri)
    if scheme == "file":
        return FileStore(path)
    if scheme == "s3":
        bucket, _, key = path.partition("/")
        return S3Store(bucket, key)
    return None
