"""A backend on the tiny CLIP (seeded weights file) and real photos served over loopback HTTP."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import http_folder
from tiny_models import TINY_CLIP, save_random_clip_weights

from jobs.serve import prepare


@pytest.fixture(scope="session")
def clip_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_clip_weights(tmp_path_factory.mktemp("clip") / "tiny.safetensors")


@pytest.fixture(scope="session")
def photos(sample_photos, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real photos (bundled, PNG) and a file that is not an image, in a folder of their own."""
    folder = tmp_path_factory.mktemp("photos")
    for name, path in zip(("voc_0.png", "voc_1.png"), sample_photos.pngs(2)):
        shutil.copy(path, folder / name)
    (folder / "notes.png").write_bytes(b"this is not an image")
    return folder


@pytest.fixture(scope="session")
def image_server(photos: Path) -> Iterator[tuple[str, list]]:
    """``(base URL, seen requests)`` of a loopback HTTP server of ``photos``."""
    seen: list = []
    redirects = {"/moved.png": "http://169.254.169.254/latest/meta-data/"}
    with http_folder(photos, redirects=redirects, seen=seen) as url:
        yield url, seen


@pytest.fixture()
def make_backend(clip_weights: Path, no_label_studio_env: None):
    """``make_backend(*flags)``: a :class:`Backend` on the tiny CLIP that may fetch from
    127.0.0.1, built through the job's own flag parsing and checks."""
    from pipeline.serve.backend import Backend

    def make(*extra: str) -> Backend:
        flags = ["--clip-model", TINY_CLIP, "--clip-weights", str(clip_weights), "--device", "cpu"]
        cfg, spec = prepare([*flags, "--allowed-hosts", "127.0.0.1", *extra])
        return Backend(cfg, spec)

    return make


@pytest.fixture()
def no_label_studio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)


@pytest.fixture(autouse=True)
def serve_replica_context() -> Iterator[None]:
    """The runtime context a Ray Serve replica has, so that ``serve.batch`` (which reads the
    deployment's ``max_ongoing_requests`` from it) runs here without a Serve cluster.

    Uses Serve's own setter and config classes (``ray.serve.context``); the batching itself is
    Serve's. Ray Serve end to end: tests/integration/test_serve_label_studio.py.
    """
    from ray.serve import context
    from ray.serve._private.common import DeploymentID, ReplicaID
    from ray.serve._private.config import DeploymentConfig
    from ray.serve.schema import ReplicaRank

    from pipeline.serve.deployment import LabelStudioBackend

    saved = context._INTERNAL_REPLICA_CONTEXT
    limit = LabelStudioBackend._deployment_config.max_ongoing_requests  # the deployed value
    context._set_internal_replica_context(
        replica_id=ReplicaID("test", DeploymentID(name="LabelStudioBackend", app_name="test")),
        servable_object=None,
        _deployment_config=DeploymentConfig(max_ongoing_requests=limit),
        rank=ReplicaRank(rank=0, node_rank=0, local_rank=0),
        world_size=1,
    )
    yield
    context._INTERNAL_REPLICA_CONTEXT = saved
