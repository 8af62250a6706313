"""``jobs/label.py`` as users run it: a subprocess with the tiny random zegclip model.

Covers exit codes (0 / 2 / 3), ``--config`` files, resumption through the CLI, Hugging Face
``datasets`` decoding of the output, and ``ray job submit`` against a loopback-only
``ray start --head`` cluster reading from and writing to the moto S3 server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
from fakes import REPO_ROOT, free_port
from tiny_models import TINY_CLIP

from pipeline import encode, schema, storage, write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ["--clip-model", TINY_CLIP, "--clip-pretrained", "none", "--batch-size", "2"]


def _run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "jobs" / "label.py"), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture()
def local_input(tmp_path: Path, sample_photos) -> dict:
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_photos.jpegs(2):
        shutil.copy(p, src / p.name)
    shutil.copy(sample_photos.pngs(1)[0], src / "voc_0.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("# street\nroad\ncar, automobile\nsky\nperson, pedestrian\n")
    return {"input": str(src), "vocab": str(vocab), "output": str(tmp_path / "out")}


def test_cli_labels_resumes_and_sets_exit_codes(local_input: dict, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(
        f"input: {local_input['input']}\nvocab: {local_input['vocab']}\n"
        "max-error-rate: 0.0\nshard-size: 2\n"
    )
    out = local_input["output"]
    first = _run_cli("--config", str(config), "--output", out, *TINY)
    assert first.returncode == 3, first.stderr[-3000:]  # 1 of 4 rows is an error > 0.0
    assert "exceeds --max-error-rate" in first.stderr
    assert "images  4 (3 ok, 1 error" in first.stdout

    import datasets  # the output is a Hugging Face dataset with Image columns

    files = write.label_files(out)
    assert files == sorted(str(p) for p in (Path(out) / "labels").glob("*.parquet"))
    assert len(files) >= 2  # at most --shard-size rows per file
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert isinstance(ds.features[schema.MASK], datasets.Image)
    rows = [r for r in ds if r[schema.STATUS] == "ok"]
    assert len(rows) == 3
    for r in rows:
        assert r[schema.MASK].size == (r[schema.WIDTH], r[schema.HEIGHT])
        mask = np.asarray(r[schema.MASK])
        assert sum(r[schema.CLASS_PIXEL_COUNTS]) == np.count_nonzero(mask != 255)
        assert len(r[schema.CLASS_PIXEL_COUNTS]) == 4  # classes, not synonyms
    meta = json.loads(pq.read_schema(files[0]).metadata[b"labeler"])
    assert meta["vocabulary"] == ["road", "car", "sky", "person"]
    assert meta["model"]["clip_model"] == TINY_CLIP
    run = json.loads((Path(out) / "run.json").read_text())
    assert run["config"]["max_error_rate"] == 0.0 and run["config"]["shard_size"] == 2

    again = _run_cli("--config", str(config), "--output", out, "--max-error-rate", "0.5", *TINY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 already labelled, 0 files written" in again.stdout
    assert sorted(str(p) for p in (Path(out) / "labels").glob("*.parquet")) == files


def test_cli_configuration_errors_exit_2(local_input: dict, tmp_path: Path) -> None:
    base = ["--input", local_input["input"], "--output", local_input["output"], *TINY]
    missing_ckpt = _run_cli(
        *base, "--vocab", local_input["vocab"], "--checkpoint", str(tmp_path / "nope.safetensors")
    )
    assert missing_ckpt.returncode == 2
    assert "--checkpoint" in missing_ckpt.stderr and "nope.safetensors" in missing_ckpt.stderr
    (tmp_path / "dup.txt").write_text("cat\nCat\n")
    dup = _run_cli(*base, "--vocab", str(tmp_path / "dup.txt"))
    assert dup.returncode == 2 and "already appears" in dup.stderr
    bad_flag = _run_cli(*base, "--vocab", local_input["vocab"], "--concurrency", "3,1")
    assert bad_flag.returncode == 2 and "--concurrency" in bad_flag.stderr
    (tmp_path / "corrupt.bin").write_bytes(b"not a weights file")
    corrupt = _run_cli(
        *base, "--vocab", local_input["vocab"], "--clip-weights", str(tmp_path / "corrupt.bin")
    )
    assert corrupt.returncode == 2 and "--clip-weights" in corrupt.stderr
    assert not Path(local_input["output"]).exists() or not write.finished_parts(
        local_input["output"]
    )


@pytest.fixture()
def ray_head() -> Iterator[str]:
    """A loopback-only ``ray start --head --block`` in its own process group; yields the
    dashboard address. Teardown signals that group only (never ``ray stop``, which would stop
    every Ray on the machine)."""
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths have a limit
    dash = free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={free_port()}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={free_port()}",
        # Fixed default agent ports (e.g. 52365) collide with any other Ray on this machine,
        # such as the session's local Ray; the job agent then never registers.
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        "--num-cpus=2",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_dashboard(address, proc)
        yield address
    finally:
        _kill_group(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the head's process group, then SIGKILL whatever is left of that group."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


def _wait_for_dashboard(address: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError("Ray dashboard did not come up")


def test_ray_job_submit_end_to_end(
    ray_head: str, moto_s3: str, s3_bucket: str, local_input: dict
) -> None:
    client = boto3.client("s3", endpoint_url=moto_s3)
    bucket = s3_bucket.removeprefix("s3://")
    for p in sorted(Path(local_input["input"]).iterdir()):
        client.put_object(Bucket=bucket, Key=f"images/{p.name}", Body=p.read_bytes())
    client.put_object(Bucket=bucket, Key="vocab.txt", Body=Path(local_input["vocab"]).read_bytes())
    aws = {
        k: os.environ[k]
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_EC2_METADATA_DISABLED",
        )
    }
    runtime_env = {"env_vars": aws, "excludes": ["tests/", "bench/", "infra/", "*.md"]}
    output = f"{s3_bucket}/labels"
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--address",
        ray_head,
        "--working-dir",
        ".",
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        "python",
        "jobs/label.py",
        "--vocab",
        f"{s3_bucket}/vocab.txt",
        "--input",
        f"{s3_bucket}/images/",
        "--output",
        output,
        "--max-error-rate",
        "0.5",
        *TINY,
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    for _ in range(6):  # the head's job agent may start a few seconds after the dashboard
        done = subprocess.run(
            cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400
        )
        if "No available agent" not in done.stdout + done.stderr:
            break
        time.sleep(5)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "succeeded" in done.stdout.lower()
    assert "images  4 (3 ok, 1 error" in done.stdout
    config_lines = [ln for ln in done.stdout.splitlines() if "jobs.label: config:" in ln]
    assert config_lines and all("testing" not in ln for ln in config_lines)  # no credentials
    shards = write.finished_parts(output)
    assert len(shards) == 1
    fs, path = storage.filesystem_for(write.label_uri(output, shards[0]))
    table = pq.read_table(path, filesystem=fs)
    assert table.num_rows == 4
    ok = [r for r in table.to_pylist() if r[schema.STATUS] == "ok"]
    for r in ok:
        assert encode.decode_png(r[schema.MASK]["bytes"]).shape == (
            r[schema.HEIGHT],
            r[schema.WIDTH],
        )


def test_readme_demo_labels_the_bundled_sample_photos(tmp_path: Path) -> None:
    """The README's first command without ../shared: scikit-image's photos, the example vocab."""
    photos = tmp_path / "photos"
    made = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "sample_photos.py"), str(photos)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(made.stdout.split()) == 5
    out = tmp_path / "demo"
    vocab = REPO_ROOT / "examples" / "vocab.txt"
    done = _run_cli("--vocab", str(vocab), "--input", str(photos), "--output", str(out), *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(out / "labels")
    assert sorted(table.column(schema.STATUS).to_pylist()) == ["ok"] * 5
    sizes = {Path(p).name: (w, h) for p, w, h in zip(*table_columns(table))}
    assert sizes["astronaut.png"] == (512, 512) and sizes["rocket.jpg"] == (640, 427)


def table_columns(table) -> tuple[list, list, list]:
    """Source file, width and height of every row."""
    return (
        table.column(schema.SOURCE_URI).to_pylist(),
        table.column(schema.WIDTH).to_pylist(),
        table.column(schema.HEIGHT).to_pylist(),
    )
