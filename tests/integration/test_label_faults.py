"""Faults survived: throttling and 5xx from S3, killed drivers. Real local Ray (one per driver
process), real moto S3 on 127.0.0.1 behind a fault-injecting proxy, real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT
from s3_fault_proxy import FaultProxy

from pipeline import schema, storage, write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNNER = Path(__file__).with_name("label_subprocess.py")


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "PYTHONPATH": str(REPO_ROOT), **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def _label(input_uri: str, output: str, env: dict[str, str], *flags: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(RUNNER), input_uri, output, *flags],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rows(output: str) -> pa.Table:
    tables = []
    for uri in write.label_files(output):
        fs, path = storage.filesystem_for(uri)
        tables.append(pq.read_table(path, filesystem=fs, columns=[schema.IMAGE_ID, schema.STATUS]))
    return pa.concat_tables(tables)


def _upload(moto_s3: str, s3_bucket: str, photos: list[Path]) -> str:
    client = boto3.client("s3", endpoint_url=moto_s3)
    bucket = s3_bucket.removeprefix("s3://")
    for p in photos:
        client.put_object(Bucket=bucket, Key=f"in/{p.name}", Body=p.read_bytes())
    return f"{s3_bucket}/in"


def test_throttling_and_5xx_lose_and_duplicate_nothing(
    moto_s3: str, s3_bucket: str, data_root: Path
) -> None:
    photos = sorted((data_root / "camvid" / "test").glob("*.jpg"))[:24]
    input_uri, output = _upload(moto_s3, s3_bucket, photos), f"{s3_bucket}/out"
    proxy = FaultProxy(moto_s3, fault_every=4)  # 1 request in 4: 503 SlowDown or 500
    try:
        result = _label(input_uri, output, _env(proxy.start()))
    finally:
        proxy.stop()
    assert proxy.faults >= 10 and proxy.faults * 4 <= proxy.requests + 4
    assert result == {"images": 24, "errors": 0}
    table = _rows(output)
    ids = table[schema.IMAGE_ID].to_pylist()
    assert len(ids) == len(set(ids)) == 24 and set(table[schema.STATUS].to_pylist()) == {"ok"}


def test_read_that_keeps_failing_is_an_error_row_until_retried(
    moto_s3: str, s3_bucket: str, data_root: Path
) -> None:
    photos = sorted((data_root / "camvid" / "test").glob("*.jpg"))[:6]
    input_uri, output = _upload(moto_s3, s3_bucket, photos), f"{s3_bucket}/out"
    proxy = FaultProxy(moto_s3, fail_paths=[f"/in/{photos[3].name}"])
    try:
        env = _env(proxy.start(), AWS_MAX_ATTEMPTS="2")
        first = _label(input_uri, output, env)
        errors = [r for r in _rows(output).to_pylist() if r[schema.STATUS] == "error"]
        proxy.fail_paths = ()  # the outage is over
        plain = _label(input_uri, output, env)
        retried = _label(input_uri, output, env, "--retry-errors")
    finally:
        proxy.stop()
    assert first == {"images": 6, "errors": 1}
    assert [r[schema.IMAGE_ID] for r in errors] == [photos[3].name]
    assert plain["images"] == 0
    assert retried == {"images": 1, "errors": 0}
    table = _rows(output)
    assert sorted(table[schema.IMAGE_ID].to_pylist()) == sorted(p.name for p in photos)
    assert set(table[schema.STATUS].to_pylist()) == {"ok"}
