"""fetch_cached: local paths, and real servers on 127.0.0.1 (moto S3, a counting HTTP server).

Tests talking to a server are marked ``integration`` (about 0.3-1 s each on 2 cores).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zegclip.weights import fetch_cached, redact_uri

BUCKET = "weights"
PAYLOAD = b"zegclip-weights-" + bytes(range(256)) * 64  # 16 KiB of non-text bytes


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cached_files(cache: Path) -> list[Path]:
    """Every file under the cache except the lock files (which are expected to stay)."""
    return sorted(p for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock")


# ---------------------------------------------------------------- local paths


def test_local_path_is_returned_as_is(tmp_path: Path) -> None:
    weights = tmp_path / "ckpt.safetensors"
    weights.write_bytes(PAYLOAD)
    cache = tmp_path / "cache"

    assert fetch_cached(str(weights), cache_dir=cache) == weights
    assert fetch_cached(f"file://{weights}", cache_dir=cache, sha256=_sha(PAYLOAD)) == weights
    assert not cache.exists()  # nothing copied


def test_missing_local_file_names_uri_and_flag(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*--clip-weights"):
        fetch_cached(str(missing), flag="--clip-weights")


def test_local_checksum_mismatch_and_sidecar(tmp_path: Path) -> None:
    weights = tmp_path / "ckpt.pt"
    weights.write_bytes(PAYLOAD)
    with pytest.raises(ValueError, match=r"sha256 mismatch.*ckpt\.pt.*--checkpoint"):
        fetch_cached(str(weights), sha256="0" * 64, flag="--checkpoint")
    (tmp_path / "ckpt.pt.sha256").write_text(f"{'1' * 64}  ckpt.pt\n")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        fetch_cached(str(weights))


def test_redact_uri_drops_query_and_user_info() -> None:
    shown = redact_uri("https://user:pw@host:8080/a/b.pt?X-Amz-Signature=abc#frag")
    assert shown == "https://host:8080/a/b.pt?<redacted>"
    assert redact_uri("s3://bucket/key.pt") == "s3://bucket/key.pt"


# ---------------------------------------------------------------- S3 (moto server)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """An s3fs filesystem on a fresh bucket; credentials and endpoint only via the environment."""
    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET)
    return fs


@pytest.mark.integration
def test_s3_download_once_then_cache_hit(s3, tmp_path: Path) -> None:
    s3.pipe(f"{BUCKET}/ckpt/model.safetensors", PAYLOAD)
    uri = f"s3://{BUCKET}/ckpt/model.safetensors"

    first = fetch_cached(uri, cache_dir=tmp_path, sha256=_sha(PAYLOAD))
    assert first.name == "model.safetensors"  # suffix kept for format detection
    assert first.parent.parent == tmp_path
    assert first.read_bytes() == PAYLOAD
    mtime = first.stat().st_mtime_ns

    second = fetch_cached(uri, cache_dir=tmp_path)
    assert second == first
    assert second.stat().st_mtime_ns == mtime  # reused, not rewritten


@pytest.mark.integration
def test_s3_reuploaded_object_gets_new_entry(s3, tmp_path: Path) -> None:
    uri = f"s3://{BUCKET}/model.pt"
    s3.pipe(f"{BUCKET}/model.pt", PAYLOAD)
    old = fetch_cached(uri, cache_dir=tmp_path)
    s3.pipe(f"{BUCKET}/model.pt", PAYLOAD[::-1])  # new ETag
    new = fetch_cached(uri, cache_dir=tmp_path)
    assert new != old
    assert new.read_bytes() == PAYLOAD[::-1]


@pytest.mark.integration
def test_s3_checksum_mismatch_leaves_nothing_cached(s3, tmp_path: Path) -> None:
    s3.pipe(f"{BUCKET}/model.pt", PAYLOAD)
    with pytest.raises(ValueError, match=r"sha256 mismatch.*s3://weights/model\.pt"):
        fetch_cached(f"s3://{BUCKET}/model.pt", cache_dir=tmp_path, sha256="ab" * 32)
    assert _cached_files(tmp_path) == []


@pytest.mark.integration
def test_s3_sidecar_digest_is_checked(s3, tmp_path: Path) -> None:
    s3.pipe(f"{BUCKET}/good.pt", PAYLOAD)
    s3.pipe(f"{BUCKET}/good.pt.sha256", f"{_sha(PAYLOAD)}  good.pt\n".encode())
    assert fetch_cached(f"s3://{BUCKET}/good.pt", cache_dir=tmp_path).read_bytes() == PAYLOAD

    s3.pipe(f"{BUCKET}/bad.pt", PAYLOAD)
    s3.pipe(f"{BUCKET}/bad.pt.sha256", f"{_sha(b'other')}  bad.pt\n".encode())
    with pytest.raises(ValueError, match=r"sha256 mismatch.*bad\.pt"):
        fetch_cached(f"s3://{BUCKET}/bad.pt", cache_dir=tmp_path / "other")
    assert _cached_files(tmp_path / "other") == []


@pytest.mark.integration
def test_s3_missing_object_names_uri_and_flag(s3, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"s3://weights/absent\.pt.*--checkpoint"):
        fetch_cached(f"s3://{BUCKET}/absent.pt", cache_dir=tmp_path, flag="--checkpoint")


@pytest.mark.integration
def test_cache_dir_defaults_to_env(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEGCLIP_CACHE", str(tmp_path / "envcache"))
    s3.pipe(f"{BUCKET}/model.pt", PAYLOAD)
    path = fetch_cached(f"s3://{BUCKET}/model.pt")
    assert path.is_relative_to(tmp_path / "envcache")


# ---------------------------------------------------------------- HTTP (counting server)


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; records every GET path and holds each GET briefly to force overlap."""

    gets: list[str]
    lock: threading.Lock
    delay_s: float = 0.2

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        with self.lock:
            self.gets.append(self.path)
        time.sleep(self.delay_s)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # keep test output quiet


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, list[str], Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_CountingHandler,), {"gets": [], "lock": threading.Lock()})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler.gets, root
    server.shutdown()
    thread.join()


def _fetch_in_child(uri: str, cache: str, barrier, results) -> None:
    barrier.wait(timeout=30)  # start all downloads together
    path = fetch_cached(uri, cache_dir=cache)
    results.put((str(path), hashlib.sha256(path.read_bytes()).hexdigest()))


@pytest.mark.integration
def test_concurrent_processes_download_once(http_server, tmp_path: Path) -> None:
    base, gets, root = http_server
    (root / "vit.safetensors").write_bytes(PAYLOAD)
    uri = f"{base}/vit.safetensors"
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_fetch_in_child, args=(uri, str(cache), barrier, results))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]

    outcomes = {results.get(timeout=5) for _ in procs}
    assert len(outcomes) == 1  # same path, same bytes everywhere
    ((path, digest),) = outcomes
    assert digest == _sha(PAYLOAD)
    assert Path(path).is_relative_to(cache)
    assert gets.count("/vit.safetensors") == 1


@pytest.mark.integration
def test_query_string_never_logged_or_raised(
    http_server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base, _, root = http_server
    (root / "w.pt").write_bytes(PAYLOAD)
    caplog.set_level(logging.DEBUG, logger="zegclip.weights")

    path = fetch_cached(f"{base}/w.pt?token=SeCrEt123", cache_dir=tmp_path)
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(FileNotFoundError) as excinfo:
        fetch_cached(f"{base}/gone.pt?token=SeCrEt123", cache_dir=tmp_path)

    assert "downloading weights" in caplog.text
    assert "SeCrEt123" not in caplog.text
    assert "SeCrEt123" not in str(excinfo.value)
    assert "gone.pt" in str(excinfo.value)
