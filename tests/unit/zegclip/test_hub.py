"""Whether open_clip can get a pretrained tag's weights: caches first, then one short probe."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fakes import free_port

import zegclip  # noqa: F401  (makes open_clip importable)
from zegclip.clip import WeightsError
from zegclip.io import hub
from zegclip.validate import check_clip_source

REPO_ID = "timm/vit_base_patch16_clip_224.openai"


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    """No weights cached anywhere: an empty Hugging Face cache and an empty home."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "hf"


def test_offline_and_not_cached_fails_at_once_naming_both_ways_out(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        check_clip_source("ViT-B-16", "openai", "--clip-pretrained", without_weights="X none")
    assert time.monotonic() - start < 1.0
    text = str(info.value)
    assert "--clip-pretrained openai" in text and "HF_HUB_OFFLINE" in text
    assert "--clip-weights PATH_OR_URI" in text and "pass X none" in text


def test_weights_in_the_hugging_face_cache_need_no_network(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = empty_caches / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"cached")
    (empty_caches / f"models--{REPO_ID.replace('/', '--')}" / "refs").mkdir()
    (empty_caches / f"models--{REPO_ID.replace('/', '--')}" / "refs" / "main").write_text("abc123")
    assert hub.pretrained_problem("ViT-B-16", "openai") is None
    check_clip_source("ViT-B-16", "openai", "--clip-pretrained")


def test_url_only_weights_in_the_clip_cache_count(empty_caches, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"url": "https://example.invalid/clip/models/abc/ViT-B-16.pt"}
    monkeypatch.setattr(hub.open_clip, "get_pretrained_cfg", lambda model, tag: cfg)
    assert hub.pretrained_problem("ViT-B-16", "openai") == "HF_HUB_OFFLINE is set"
    (tmp_path / "home" / ".cache" / "clip").mkdir(parents=True)
    (tmp_path / "home" / ".cache" / "clip" / "ViT-B-16.pt").write_bytes(b"cached")
    assert hub.pretrained_problem("ViT-B-16", "openai") is None


def test_unreachable_hub_fails_after_one_short_probe(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    start = time.monotonic()
    problem = hub.pretrained_problem("ViT-B-16", "openai", timeout=2.0)
    assert problem is not None and problem.startswith("ConnectError")
    assert time.monotonic() - start < 3.0


class _Hub(BaseHTTPRequestHandler):
    """Answers the metadata request of a hub file, as huggingface.co does."""

    paths: list[str] = []

    def do_HEAD(self) -> None:  # noqa: N802
        _Hub.paths.append(self.path)
        self.send_response(200)
        self.send_header("ETag", '"e1"')
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("Content-Length", "10")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_reachable_hub_passes(empty_caches, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        assert hub.pretrained_problem("ViT-B-16", "openai") is None
    finally:
        server.shutdown()
    assert _Hub.paths == [f"/{REPO_ID}/resolve/main/open_clip_pytorch_model.bin"]
