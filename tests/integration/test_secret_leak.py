"""Credentials given to ``jobs/label.py`` through the environment never reach any output or log.

The job runs as a subprocess against the loopback moto S3 server with canary AWS credentials
(moto accepts any). Every byte it leaves behind is searched for the canaries in plain,
URL-encoded and base64 form: stdout/stderr, every file under the Ray temp dir (session logs),
every object under the output prefix, plus the decoded Parquet metadata and column values. A
negative control passes a pre-signed-style URI to ``--checkpoint`` and checks that the error the
job prints shows the URI redacted; a positive control checks the search itself.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import boto3
import pyarrow.parquet as pq
import pytest
from fakes import REPO_ROOT
from tiny_models import TINY_CLIP

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCESS_KEY_ID = "AKIALEAKCANARY0000001"
TINY = ["--clip-model", TINY_CLIP, "--clip-pretrained", "none", "--batch-size", "2"]


def _canary(tag: str) -> str:
    """A fresh 40+ character secret with ``/`` and ``+``, so URL and base64 forms differ."""
    return f"{tag}/{secrets.token_hex(12)}+{secrets.token_hex(8)}"


def _base64_forms(secret: bytes) -> set[bytes]:
    """Base64 of ``secret`` as it appears at any offset inside a longer encoded blob.

    For each of the 3 possible alignments, keeps only the 4-character groups that encode secret
    bytes alone (groups mixing in neighbouring bytes depend on those bytes).
    """
    forms = set()
    for pad in range(3):
        data = b"\0" * pad + secret
        first = -(-pad // 3)  # first group starting at or after the secret
        last = len(data) // 3  # groups ending inside the secret
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(data)
            forms.add(text[4 * first : 4 * last])
    return {f for f in forms if len(f) >= 16}


def needles(secret: str) -> dict[str, bytes]:
    """Named byte patterns under which ``secret`` could appear in an output."""
    raw = secret.encode()
    out = {"plain": raw, "url": quote(secret, safe="").encode(), "url+": quote(secret).encode()}
    out.update({f"base64[{i}]": f for i, f in enumerate(sorted(_base64_forms(raw)))})
    return out


def find_secrets(blob: bytes, secrets_: dict[str, str]) -> list[str]:
    """``"<secret name>/<form>"`` for every form of every secret that occurs in ``blob``."""
    return [
        f"{name}/{form}"
        for name, secret in secrets_.items()
        for form, needle in needles(secret).items()
        if needle in blob
    ]


def _regular_files(root: Path) -> Iterator[Path]:
    """Regular files below ``root``; sockets, fifos and symlinks are skipped."""
    for dirpath, _, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(dirpath) / name
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    yield path
            except FileNotFoundError:  # a Ray process removed it meanwhile
                continue


def _strings(value: object) -> Iterator[str | bytes]:
    """Every str/bytes leaf of a ``to_pylist`` value (structs, lists, maps)."""
    if isinstance(value, (str, bytes)):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


@pytest.fixture()
def canaries() -> dict[str, str]:
    """The secrets put into the job's environment, fresh per test."""
    return {
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": _canary("LeakCanarySecret"),
        "session_token": _canary("LeakCanarySession") + secrets.token_hex(16),
    }


@pytest.fixture()
def scratch() -> Iterator[Path]:
    """A short folder under /tmp for Ray's temp dir (its socket paths have a length limit)."""
    root = Path(tempfile.mkdtemp(prefix="sl", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def s3_inputs(s3_bucket: str, moto_s3: str, sample_photos) -> str:
    """2 PNG photos, 1 JPEG photo, 1 corrupt JPEG under ``images/`` and ``vocab.txt``."""
    client = boto3.client("s3", endpoint_url=moto_s3)
    bucket = s3_bucket.removeprefix("s3://")
    for p in [*sample_photos.pngs(2), *sample_photos.jpegs(1)]:
        client.put_object(Bucket=bucket, Key=f"images/{p.name}", Body=p.read_bytes())
    client.put_object(Bucket=bucket, Key="images/broken.jpg", Body=b"\xff\xd8\xff\xe0 not a jpeg")
    client.put_object(Bucket=bucket, Key="vocab.txt", Body=b"person\ncar, automobile\nsky\n")
    return s3_bucket


def _job_env(canaries: dict[str, str], moto_s3: str, scratch: Path) -> dict[str, str]:
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    env.update(
        {
            "AWS_ENDPOINT_URL": moto_s3,
            "AWS_ACCESS_KEY_ID": canaries["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": canaries["secret_access_key"],
            "AWS_SESSION_TOKEN": canaries["session_token"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "RAY_AUTH_MODE": "disabled",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": str(scratch),  # Ray writes <RAY_TMPDIR>/ray/session_*/logs
            "TMPDIR": str(scratch),  # any other temp file the job writes is searched too
            "ZEGCLIP_CACHE": str(scratch / "cache"),
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    return env


def _run_job(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "jobs" / "label.py"), *args, *TINY],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )


def _output_objects(moto_s3: str, bucket_uri: str, prefix: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=moto_s3)
    bucket = bucket_uri.removeprefix("s3://")
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for o in listing.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _parquet_hits(data: bytes, canaries: dict[str, str]) -> tuple[list[str], int]:
    """Search decoded schema metadata and every column value; returns (hits, metadata bytes)."""
    table = pq.read_table(io.BytesIO(data))
    metadata = table.schema.metadata or {}
    hits = []
    for k, v in metadata.items():
        hits += find_secrets(k + b"\n" + v, canaries)
    for name in table.column_names:
        values = b"\n".join(_as_bytes(s) for s in _strings(table[name].to_pylist()))
        hits += [f"column {name}: {h}" for h in find_secrets(values, canaries)]
    return hits, sum(len(k) + len(v) for k, v in metadata.items())


def test_search_finds_every_encoding_of_a_canary(canaries: dict[str, str]) -> None:
    secret = canaries["secret_access_key"]
    assert "/" in secret and "+" in secret
    only = {"secret": secret}
    assert find_secrets(b"x" * 10, only) == []
    assert "secret/plain" in find_secrets(b"key=" + secret.encode() + b";", only)
    url = b"?sig=" + quote(secret, safe="").encode() + b"&x=1"
    assert secret.encode() not in url and "secret/url" in find_secrets(url, only)
    for prefix in (b"", b"a", b"ab", b"abc"):  # every base64 alignment inside a longer blob
        blob = base64.b64encode(prefix + secret.encode() + b"tail")
        assert any(h.startswith("secret/base64") for h in find_secrets(blob, only)), prefix
    b64url = base64.urlsafe_b64encode(b"zz" + secret.encode())
    assert any(h.startswith("secret/base64") for h in find_secrets(b64url, only))


def test_environment_secrets_never_reach_outputs_or_logs(
    s3_inputs: str, moto_s3: str, canaries: dict[str, str], scratch: Path
) -> None:
    output = f"{s3_inputs}/labels"
    done = _run_job(
        _job_env(canaries, moto_s3, scratch),
        *("--input", f"{s3_inputs}/images/", "--output", output),
        *("--vocab", f"{s3_inputs}/vocab.txt"),
    )
    stdout, stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode == 3, stderr[-3000:]  # 1 corrupt of 4 > default --max-error-rate 0.1
    assert "images  4 (3 ok, 1 error" in stdout
    assert "jobs.label: config:" in stderr  # the logged config was searched too

    hits = {"stdout": find_secrets(done.stdout, canaries)}
    hits["stderr"] = find_secrets(done.stderr, canaries)

    files = list(_regular_files(scratch))
    logs = [
        p for p in files if p.parent.name == "logs" and p.parent.parent.name.startswith("session_")
    ]
    assert len(logs) >= 5, sorted(str(p) for p in files)[:50]  # Ray's session logs landed here
    assert sum(p.stat().st_size for p in logs) > 10_000
    for path in files:
        hits[str(path.relative_to(scratch))] = find_secrets(path.read_bytes(), canaries)

    objects = _output_objects(moto_s3, s3_inputs, "labels/")
    for key, data in objects.items():
        hits[f"s3 {key}"] = find_secrets(data, canaries)
    run = json.loads(objects["labels/run.json"])
    assert run["counts"] == {**run["counts"], "images": 4, "ok": 3, "error": 1}
    assert run["config"]["input"] == f"{s3_inputs}/images/"
    assert any(k.startswith("labels/_markers/") for k in objects)
    parquet_keys = [k for k in objects if k.endswith(".parquet")]
    assert "labels/class_stats.parquet" in parquet_keys and len(parquet_keys) >= 2
    for key in parquet_keys:
        parquet_hits, metadata_size = _parquet_hits(objects[key], canaries)
        hits[f"parquet {key}"] = parquet_hits
        if key.startswith("labels/labels/"):
            assert metadata_size > 100  # the labeler metadata was decoded and searched

    leaks = {where: found for where, found in hits.items() if found}
    assert leaks == {}, f"secrets leaked: {leaks}"


def test_presigned_query_in_flag_is_redacted(
    s3_inputs: str, moto_s3: str, canaries: dict[str, str], scratch: Path
) -> None:
    signature = _canary("LeakCanarySignature")
    checkpoint = f"{s3_inputs}/missing.safetensors?X-Amz-Signature={quote(signature, safe='')}"
    done = _run_job(
        _job_env(canaries, moto_s3, scratch),
        *("--input", f"{s3_inputs}/images/", "--output", f"{s3_inputs}/labels"),
        *("--vocab", f"{s3_inputs}/vocab.txt", "--checkpoint", checkpoint),
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2, stderr[-3000:]
    assert "--checkpoint" in stderr  # the URI is echoed, query string redacted
    assert "missing.safetensors?<redacted>" in stderr
    every = {**canaries, "signature": signature}
    assert find_secrets(done.stdout + done.stderr, every) == []
    assert _output_objects(moto_s3, s3_inputs, "labels/") == {}  # nothing was processed
