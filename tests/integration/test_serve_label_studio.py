"""``jobs/serve.py`` on real Ray Serve, connected to a real Label Studio on 127.0.0.1.

Label Studio (1.23, its own environment: its pins clash with ours) runs from
``$LABEL_STUDIO_VENV``, else ``../venvs/label-studio`` beside the checkout (``.ci/run`` creates
it), else ``/work/venvs/label-studio``; label-studio-sdk from that environment
creates a project with a BrushLabels config, uploads real photos and asks Label Studio for the
predictions of every task. The backend fetches the uploads from Label Studio with a personal
access token. Stored predictions must decode to the masks the predictor gives for the same
photos, with the project's class names; a task whose image URL points at the cloud-metadata
address gets no prediction. Headless Chromium then opens the labelling page of one task.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from fakes import free_port
from label_studio_converter.brush import decode_rle
from tiny_models import TINY_CLIP, save_random_clip_weights

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
_CANDIDATES = [REPO_ROOT.parent / "venvs" / "label-studio", Path("/work/venvs/label-studio")]
LS_VENV = Path(
    os.environ.get("LABEL_STUDIO_VENV")
    or next((p for p in _CANDIDATES if (p / "bin" / "label-studio").is_file()), _CANDIDATES[0])
)
LS_INSTALL = f"python3.11 -m venv {LS_VENV} && {LS_VENV}/bin/pip install label-studio==1.23.2"
CLIENT = Path(__file__).with_name("label_studio_client.py")
PHOTOS = ("voc_0.png", "voc_1.png", "voc_114.png")
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam.png"
NAMES = ("person", "dog", "sky, clouds")
LABEL_CONFIG = """<View>
  <Image name="img" value="$img" zoom="true"/>
  <BrushLabels name="tag" toName="img">
    <Label value="person" background="#e6194b"/>
    <Label value="dog" background="#3cb44b"/>
    <Label value="sky, clouds" background="#4363d8"/>
  </BrushLabels>
</View>"""
USER, PASSWORD, TOKEN = "serve@example.com", "serve-test-pass", "legacy-token-for-tests"
SCREENSHOT_ENV = "SERVE_SCREENSHOT"  # also save the browser screenshot here when set


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url} exited early:\n{log.read_text()[-3000:]}"
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(2)
    raise AssertionError(f"{url} not up after {timeout_s} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Label Studio server on a free loopback port (SQLite, offline); yields its URL."""
    binary = LS_VENV / "bin" / "label-studio"
    if not binary.is_file():
        pytest.skip(f"Label Studio not installed at {LS_VENV}; install it with: {LS_INSTALL}")
    home = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(home),
        "DJANGO_DB": "sqlite",
        "USE_DEFAULT_BANNED_SUBNETS": "false",  # its ML backend is on 127.0.0.1 too
        "LATEST_VERSION_CHECK": "false",  # no pypi.org look-up: loopback traffic only
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }
    cmd = [str(binary), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port)]
    cmd += ["--username", USER, "--password", PASSWORD, "--user-token", TOKEN]
    cmd += ["--enable-legacy-api-token"]  # the SDK setup uses it; the backend gets a PAT
    log = home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", 900, proc, log)  # first start migrates SQLite: minutes
        yield url
    finally:
        _stop(proc)


def _client(*args: str) -> dict:
    out = subprocess.run(
        [str(LS_VENV / "bin" / "python"), str(CLIENT), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def photo_dir(sample_photos, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uploaded photos: real photos bundled with scikit-image, as PNGs named ``PHOTOS``."""
    folder = tmp_path_factory.mktemp("ls-photos")
    for name, path in zip(PHOTOS, sample_photos.pngs(len(PHOTOS))):
        shutil.copy(path, folder / name)
    return folder


@pytest.fixture(scope="module")
def project(label_studio: str, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A BrushLabels project with three uploaded photos and one metadata-address task."""
    config = tmp_path_factory.mktemp("config") / "config.xml"
    config.write_text(LABEL_CONFIG, encoding="utf-8")
    images = [str(photo_dir / n) for n in PHOTOS]
    return _client("prepare", label_studio, TOKEN, str(config), *images, "--url-task", METADATA_URL)


@pytest.fixture(scope="module")
def backend(label_studio: str, project: dict, tmp_path_factory: pytest.TempPathFactory):
    """``jobs/serve.py`` (local Ray, real Ray Serve) on a free port; yields (URL, weights)."""
    folder = tmp_path_factory.mktemp("backend")
    weights = save_random_clip_weights(folder / "tiny.safetensors")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        "LABEL_STUDIO_URL": label_studio,
        "LABEL_STUDIO_API_KEY": project["pat"],
        "RAY_ADDRESS": "",
    }
    cmd = [sys.executable, str(REPO_ROOT / "jobs" / "serve.py"), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--clip-model", TINY_CLIP, "--clip-weights", str(weights)]
    cmd += ["--device", "cpu", "--allowed-hosts", "127.0.0.1", "--num-cpus-per-replica", "0.5"]
    log = folder / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", 300, proc, log)
        yield url, weights, log
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def predicted(label_studio: str, project: dict, backend) -> dict:
    """Label Studio's own stored predictions after its ``retrieve_tasks_predictions`` action."""
    url, _, _ = backend
    return _client("predict", label_studio, TOKEN, str(project["project"]), url)


def _expected(weights: Path, photo_dir: Path) -> dict[str, object]:
    """Photo name -> the predictor's ``Prediction`` (same flags as the backend)."""
    import zegclip
    from jobs.serve import prepare
    from pipeline.decode import decode_image
    from pipeline.serve.labelconfig import parse_label_config

    _, spec = prepare(
        ["--clip-model", TINY_CLIP, "--clip-weights", str(weights), "--device", "cpu"]
    )
    vocab = parse_label_config(LABEL_CONFIG).vocabulary
    predictor = zegclip.build_predictor(spec, vocab, zegclip.encode_vocabulary_for(spec, vocab))
    out = {}
    for name in PHOTOS:
        data = (photo_dir / name).read_bytes()
        (out[name],) = predictor.predict([decode_image(data, 10**8)[0]])
    return out


def test_label_studio_stores_the_predictors_masks(
    project: dict, predicted: dict, backend, photo_dir: Path
) -> None:
    _, weights, log = backend
    assert predicted["state"].endswith("CO"), predicted  # CONNECTED
    by_task = {p["task"]: p for p in predicted["predictions"]}
    uploads = {t["id"]: t["image"] for t in project["tasks"]}
    (metadata_task,) = [t for t, image in uploads.items() if image == METADATA_URL]
    assert metadata_task not in by_task  # its error entry is not stored
    assert "169.254.169.254" in log.read_text()  # and was logged
    expected = _expected(weights, photo_dir)
    checked = 0
    for task_id, image in uploads.items():
        if task_id == metadata_task:
            continue
        assert image.startswith("/data/upload/")  # fetched from Label Studio with the PAT
        name = next(n for n in PHOTOS if image.endswith(n))
        stored, want = by_task[task_id], expected[name]
        assert stored["model_version"] == predicted["model_version"]
        height, width = want.label_map.shape
        present = {NAMES[c] for c in np.flatnonzero(want.class_counts)}
        regions = {r["value"]["brushlabels"][0]: r for r in stored["result"]}
        assert set(regions) == present and present <= set(NAMES)
        for c, label in enumerate(NAMES):
            if label not in present:
                continue
            region = regions[label]
            assert (region["from_name"], region["to_name"]) == ("tag", "img")
            rle = decode_rle(region["value"]["rle"]).reshape(height, width, 4)
            np.testing.assert_array_equal(rle[..., 3] > 0, want.label_map == c)
        score = want.confidence_sums.sum() / want.class_counts.sum()
        assert stored["score"] == pytest.approx(score, rel=1e-6)
        checked += 1
    assert checked == len(PHOTOS)


def test_labelling_page_shows_the_pre_annotation(
    label_studio: str, project: dict, predicted: dict, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(chromium).exists() and Path(driver_path).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install, see .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    task = next(t["id"] for t in project["tasks"] if t["image"].endswith(PHOTOS[0]))
    try:
        browser.get(f"{label_studio}/user/login/")
        browser.find_element(By.NAME, "email").send_keys(USER)
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        WebDriverWait(browser, 60).until(lambda b: "/user/login" not in b.current_url)
        browser.get(f"{label_studio}/projects/{project['project']}/data?task={task}")
        shown = [n for n in NAMES if n != "sky, clouds"]

        def regions_listed(b) -> bool:
            text = b.find_element(By.TAG_NAME, "body").text
            return "Regions" in text and any(n in text for n in shown)

        WebDriverWait(browser, 180).until(regions_listed)
        time.sleep(3)  # let the canvas paint the masks
        png = browser.get_screenshot_as_png()
    finally:
        browser.quit()
    (tmp_path / "labelling.png").write_bytes(png)
    if os.environ.get(SCREENSHOT_ENV):  # the format follows the suffix (.png, .jpg)
        from PIL import Image

        Image.open(tmp_path / "labelling.png").convert("RGB").save(os.environ[SCREENSHOT_ENV])
    assert len(png) > 20_000
