"""``pipeline.review`` on a real run: moto S3 input and output, real images, local Ray, and the
report opened in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

The run's inputs include file and tar-member names carrying HTML and a ``../`` member name;
the report must show them as text and write only generated names inside its folder.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
from fakes import CountingEncoder, colour_predictor_factory, tar_bytes
from page_checks import missing_figures
from ray import cloudpickle
from tiny_models import TINY_CLIP

from pipeline import schema, storage, write
from pipeline.config import LabelJobConfig
from pipeline.review import build_report, load
from pipeline.run import run_label_job

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLASSES = ("red", "green", "blue")
HTML_NAMES = ("<b>x</b>.png", '"><img src=x onerror=alert(1)>.png')
TAR_MEMBERS = ("<script>alert(1)</script>.png", "../../escape.png")
BAD_NAME = "bad<i>name</i>.jpg"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT_ENV = "REVIEW_SCREENSHOT"  # also save the browser screenshot here when set


@pytest.fixture(scope="module")
def s3_run(moto_s3: str, ray_local: None, sample_photos) -> dict:
    """A labelling run with its input and output on S3; returns URIs and expected ids."""
    client = boto3.client("s3", endpoint_url=moto_s3)
    bucket = "review-run"
    client.create_bucket(Bucket=bucket)
    camvid, voc = sample_photos.jpegs(3), sample_photos.pngs(5)
    loose = {p.name: p.read_bytes() for p in camvid + voc[:2]}
    loose.update({HTML_NAMES[0]: voc[2].read_bytes(), HTML_NAMES[1]: camvid[0].read_bytes()})
    loose[BAD_NAME] = b"not an image"
    for name, data in loose.items():
        client.put_object(Bucket=bucket, Key=f"in/loose/{name}", Body=data)
    members = {TAR_MEMBERS[0]: voc[3].read_bytes(), TAR_MEMBERS[1]: voc[4].read_bytes()}
    client.put_object(Bucket=bucket, Key="in/shards/part.tar", Body=tar_bytes(members))
    cfg = LabelJobConfig(
        input=f"s3://{bucket}/in",
        output=f"s3://{bucket}/out",
        vocab="colours.txt",
        class_names=CLASSES,
        batch_size=4,
        num_gpus_per_actor=0,
        shard_size=4,
        max_error_rate=1.0,
    )
    summary = run_label_job(cfg, colour_predictor_factory, CountingEncoder(), {"name": "colour"})
    assert summary.errors == 1 and summary.images == len(loose) + len(members)
    return {"uri": cfg.output, "ok": summary.ok}


@pytest.fixture(scope="module")
def report(s3_run: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of ``s3_run`` built into a fresh folder (inside an otherwise empty parent)."""
    parent = tmp_path_factory.mktemp("review")
    build_report(s3_run["uri"], str(parent / "report"), sample=50, workers=2)
    return parent / "report"


def _class_stats(uri: str) -> list[dict]:
    fs, path = storage.filesystem_for(storage.join(uri, write.CLASS_STATS_FILE))
    return pq.read_table(path, filesystem=fs).to_pylist()


def test_report_escapes_names_and_writes_only_generated_files(s3_run: dict, report: Path) -> None:
    assert sorted(p.name for p in report.parent.iterdir()) == ["report"]
    files = sorted(p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file())
    thumbs = [f"thumbs/{i:05d}.jpg" for i in range(s3_run["ok"])]
    assert files == sorted(
        ["index.html", "class_images.png", "class_pixels.png", "confidence.png", *thumbs]
    )
    html = (report / "index.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt;.png" in html and "<b>x</b>" not in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert "<img src=x" not in html and "<script" not in html and "<i>name" not in html
    assert "bad&lt;i&gt;name&lt;/i&gt;.jpg" in html  # the error row
    assert "../../escape.png" in html  # shown as text; no file was written from it


def test_sample_is_lowest_confidence_first_and_bounds_work(s3_run: dict, tmp_path: Path) -> None:
    result = build_report(s3_run["uri"], str(tmp_path / "r"), sample=2, workers=1)
    assert result.sampled == 2 and result.errors == 1
    assert sorted(p.name for p in (tmp_path / "r" / "thumbs").iterdir()) == [
        "00000.jpg",
        "00001.jpg",
    ]
    run = load.load_run(s3_run["uri"])
    conf = load.image_confidence(run.rows)
    ok = np.isfinite(conf)
    lowest = sorted(zip(conf[ok], np.asarray(run.rows[schema.IMAGE_ID])[ok]))[:2]
    html = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    positions = [html.index(f'<div class="id">{_escaped(i)}</div>') for _, i in lowest]
    assert positions == sorted(positions)
    # a second report into the same folder replaces the first
    build_report(s3_run["uri"], str(tmp_path / "r"), sample=1, workers=1)
    assert [p.name for p in (tmp_path / "r" / "thumbs").iterdir()] == ["00000.jpg"]


def _escaped(text: str) -> str:
    import markupsafe

    return str(markupsafe.escape(text))


def _chrome(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(
            f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): install it with "
            "`sudo apt-get install chromium chromium-driver` (Debian/Ubuntu; .ci/run does this)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def test_report_in_headless_chromium(s3_run: dict, report: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = _chrome(tmp_path)
    try:
        driver.get((report / "index.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 3 + s3_run["ok"]
        for img in images:
            loaded = driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", img
            )
            assert loaded and loaded > 0, img.get_attribute("src")
        shown = {}
        for row in driver.find_elements(By.CSS_SELECTOR, "#classes tbody tr"):
            name = row.find_element(By.CSS_SELECTOR, "td.name").text
            pixels = int(row.find_element(By.CSS_SELECTOR, "td.pixels").text)
            count = int(row.find_element(By.CSS_SELECTOR, "td.images").text)
            shown[name] = (pixels, count)
        expected = {
            s["class_name"]: (s["pixels"], s["images"]) for s in _class_stats(s3_run["uri"])
        }
        assert shown == expected
        ids = {e.text for e in driver.find_elements(By.CSS_SELECTOR, "#gallery .id")}
        for name in HTML_NAMES:
            assert f"loose/{name}" in ids
        assert f"shards/part.tar/{TAR_MEMBERS[0]}" in ids
        error_ids = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#errors td.id")]
        assert error_ids == [f"loose/{BAD_NAME}"]
        assert driver.execute_script("return document.querySelectorAll('b, script').length") == 0
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        assert missing_figures(driver.page_source) == []  # no None/nan/blank where a figure goes
        shot = tmp_path / "review.png"
        driver.save_screenshot(str(shot))
        if os.environ.get(SCREENSHOT_ENV):
            shutil.copy(shot, os.environ[SCREENSHOT_ENV])
    finally:
        driver.quit()


@pytest.mark.slow
def test_label_cli_review_flag_writes_report(tmp_path: Path, sample_photos) -> None:
    """``jobs/label.py --review`` with the tiny random model, then ``jobs/review.py``."""
    import subprocess

    from fakes import REPO_ROOT

    src = tmp_path / "in"
    src.mkdir()
    for p in sample_photos.jpegs(2):
        shutil.copy(p, src / p.name)
    (tmp_path / "vocab.txt").write_text("road\nsky\n<b>car</b>\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    tiny = ["--clip-model", TINY_CLIP, "--clip-pretrained", "none", "--batch-size", "2"]
    args = ["--input", str(src), "--output", str(tmp_path / "out"), "--vocab"]
    label = [
        sys.executable,
        str(REPO_ROOT / "jobs" / "label.py"),
        *args,
        str(tmp_path / "vocab.txt"),
    ]
    done = subprocess.run([*label, *tiny, "--review"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    html = (tmp_path / "out" / "report" / "index.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;car&lt;/b&gt;" in html and html.count('class="card"') == 2
    review = [sys.executable, str(REPO_ROOT / "jobs" / "review.py"), str(tmp_path / "out")]
    done = subprocess.run(
        [*review, "--out", str(tmp_path / "r2"), "--sample", "1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "1 overlays" in done.stdout, done.stderr[-3000:]
    done = subprocess.run([*review, "--out", "s3://b/r"], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "--out s3://b/r" in done.stderr
