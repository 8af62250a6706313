"""Shared fixtures: repo on ``sys.path``, a loopback moto S3 server, one local Ray per session.

Ray's environment variables must be set before ``import ray`` and S3 variables before Ray
starts (workers inherit the driver's environment at ``ray.init``), so ``ray_local`` depends on
``moto_s3``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import fakes  # noqa: E402
from fakes import CountingEncoder, colour_predictor_factory, free_port  # noqa: E402
from photos import SamplePhotos  # noqa: E402
from tiny_models import DATA_ROOT, NO_DATA_REASON  # noqa: E402

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Weight and embedding caches go to a per-session folder, never the user's ~/.cache.
if "ZEGCLIP_CACHE" not in os.environ:
    import tempfile

    os.environ["ZEGCLIP_CACHE"] = tempfile.mkdtemp(prefix="zegclip-test-cache-")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared ground-truth data folder (``../shared/data`` from the repo root); skips without.

    Only for tests that need ground-truth masks; a test that needs a photo uses ``sample_photos``.
    """
    if not DATA_ROOT.is_dir():
        pytest.skip(NO_DATA_REASON)
    return DATA_ROOT


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory: pytest.TempPathFactory) -> SamplePhotos:
    """Real photos (bundled with scikit-image) for tests that need no ground truth."""
    return SamplePhotos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """A moto S3 server on a free loopback port; sets the standard AWS_* variables.

    Yields:
        The endpoint URL.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups off loopback
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def s3_bucket(moto_s3: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket; returns ``s3://<bucket>``."""
    import boto3

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50]
    name = name.strip("-")
    boto3.client("s3", endpoint_url=moto_s3).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(moto_s3: str) -> Iterator[None]:
    """One local Ray (2 CPUs, no dashboard) for the session, started after the S3 env is set."""
    import ray
    from ray import cloudpickle

    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    cloudpickle.register_pickle_by_value(fakes)  # the fake predictors reach the workers
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture()
def colour_factory():
    """The colour-threshold predictor factory."""
    return colour_predictor_factory


@pytest.fixture()
def counting_encoder() -> CountingEncoder:
    """A fresh call-counting vocabulary encoder."""
    return CountingEncoder()
