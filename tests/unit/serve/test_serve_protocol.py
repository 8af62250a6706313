"""The ML-backend protocol (``pipeline.serve.app``) on the ASGI app, without Ray Serve: real
tiny-CLIP predictions of real photos fetched over loopback HTTP, error entries, 4xx answers and
request batching (``serve.batch``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import numpy as np
import pytest
from fakes import LABEL_CONFIG, NAMES
from fastapi.testclient import TestClient
from label_studio_converter.brush import decode_rle

from pipeline.decode import decode_image
from pipeline.serve.app import build_app


def _task(task_id: int, url: str, **data) -> dict:
    return {"id": task_id, "data": {"img": url, **data}}


def _masks(prediction: dict, height: int, width: int) -> dict[str, np.ndarray]:
    """Label name -> (H, W) bool mask decoded from Label Studio RLE."""
    out = {}
    for region in prediction["result"]:
        assert (region["from_name"], region["to_name"]) == ("paint", "photo")
        assert (region["original_height"], region["original_width"]) == (height, width)
        (name,) = region["value"]["brushlabels"]
        rgba = decode_rle(region["value"]["rle"]).reshape(height, width, 4)
        out[name] = rgba[..., 3] > 0
    return out


def test_setup_and_predict_give_the_predictors_masks(make_backend, image_server, photos) -> None:
    backend = make_backend()
    url, _ = image_server
    with TestClient(build_app(backend)) as client:
        health = client.get("/health").json()
        assert health["status"] == "UP" and health["model_version"] == backend.model_version
        setup = client.post("/setup", json={"project": "1.0", "schema": LABEL_CONFIG})
        assert setup.status_code == 200 and setup.json() == {"model_version": backend.model_version}
        tasks = [_task(7, url + "voc_0.png"), _task(8, url + "voc_1.png")]
        body = {"tasks": tasks, "label_config": LABEL_CONFIG, "project": "1.0"}
        response = client.post("/predict", json=body).json()
    assert response["model_version"] == backend.model_version
    predictor = backend.predictor(backend.labels_for(LABEL_CONFIG))
    assert backend.predictor(backend.labels_for(LABEL_CONFIG)) is predictor  # built once
    assert list(backend._predictors) == [backend.labels_for(LABEL_CONFIG).key]
    assert len(response["results"]) == 2
    for name, result in zip(("voc_0.png", "voc_1.png"), response["results"]):
        rgb, (w, h) = decode_image((photos / name).read_bytes(), 10**8)
        (expected,) = predictor.predict([rgb])
        masks = _masks(result, h, w)
        present = [c for c in range(len(NAMES)) if expected.class_counts[c]]
        assert sorted(masks) == sorted(NAMES[c] for c in present) and masks
        for c in present:
            np.testing.assert_array_equal(masks[NAMES[c]], expected.label_map == c)
        labelled = expected.class_counts.sum()
        assert result["score"] == pytest.approx(expected.confidence_sums.sum() / labelled)
        assert 0.0 <= result["score"] <= 1.0


def test_bad_tasks_get_error_entries_and_others_predictions(
    make_backend, image_server, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = image_server
    tasks = [
        _task(1, url + "voc_0.png"),
        _task(2, url + "notes.png"),  # not an image
        _task(3, url + "missing.png"),  # 404
        {"id": 4, "data": "not a mapping"},  # no image field
        _task(5, url + "voc_0.png", classes=["dog", "cat"]),  # unknown class
        _task(6, "http://169.254.169.254/latest/meta-data/"),  # cloud metadata
        _task(7, "file:///etc/passwd"),
        _task(8, url + "moved.png"),  # redirect to the metadata address
        _task(9, url + "voc_0.png", classes="dog"),  # a known class: only its region
    ]
    with caplog.at_level(logging.WARNING, logger="jobs.serve"):
        with TestClient(build_app(make_backend())) as client:
            answer = client.post("/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r.get("task") for r in results[1:8]] == [2, 3, 4, 5, 6, 7, 8]
    assert "result" in results[0] and "result" not in results[1]
    errors = {r["task"]: r["error"] for r in results if "error" in r}
    assert "unreadable image" in errors[2]
    assert "HTTP 404" in errors[3]
    assert "no 'img' field" in errors[4]
    assert "unknown class 'cat'" in errors[5] and "person, dog, grass, lawn" in errors[5]
    assert "169.254.169.254" in errors[6] and "--allowed-hosts" in errors[6]
    assert "scheme 'file' refused" in errors[7]
    assert "169.254.169.254" in errors[8]
    assert set(errors) == {2, 3, 4, 5, 6, 7, 8}
    only_dog = {r["value"]["brushlabels"][0] for r in results[8]["result"]}
    assert only_dog <= {"dog"}
    logged = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("task ") for m in logged) == 7


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("/predict", {"label_config": LABEL_CONFIG}, 422, "tasks: Field required"),
        ("/predict", {"tasks": [], "label_config": LABEL_CONFIG}, 422, "tasks: List should"),
        ("/predict", {"tasks": [{"id": 1}]}, 422, "label_config: Field required"),
        ("/predict", {"tasks": "x", "label_config": "<View/>"}, 422, "tasks: Input should"),
        ("/predict", {"tasks": [{"id": 1}], "label_config": "<View/>"}, 400, "no <BrushLabels>"),
        ("/predict", {"tasks": [{}], "label_config": "<View"}, 400, "not valid XML"),
        ("/setup", {"project": "1"}, 422, "schema: Field required"),
        ("/webhook", {"project": {}}, 422, "action: Field required"),
    ],
)
def test_malformed_requests_get_4xx_with_a_reason(
    make_backend, path: str, body: dict, status: int, reason: str
) -> None:
    with TestClient(build_app(make_backend())) as client:
        response = client.post(path, json=body)
    assert response.status_code == status
    assert reason in response.json()["error"]


def test_label_config_problems_and_other_routes(make_backend) -> None:
    duplicate = LABEL_CONFIG.replace('value="dog"', 'value="Person"')
    background = make_backend("--background", "dog,sky")
    with TestClient(build_app(background)) as client:
        answer = client.post("/setup", json={"schema": duplicate})
        assert answer.status_code == 400 and "'Person' already appears" in answer.json()["error"]
        answer = client.post("/setup", json={"schema": LABEL_CONFIG})
        assert answer.status_code == 400 and "dog also in the vocabulary" in answer.json()["error"]
        json_type = {"content-type": "application/json"}
        not_json = client.post("/predict", content=b"{", headers=json_type)
        assert not_json.status_code == 422 and "JSON decode error" in not_json.json()["error"]
        hook = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
        assert hook.status_code == 200 and hook.json()["action"] == "ANNOTATION_CREATED"
        assert client.post("/train", json={}).status_code == 501
        versions = client.get("/versions").json()["versions"]
        assert versions == [background.model_version]


@pytest.mark.parametrize(("batch", "calls"), [(4, 1), (1, 4)])
def test_concurrent_requests_share_a_model_call(
    make_backend, image_server, batch: int, calls: int
) -> None:
    url, _ = image_server
    backend = make_backend("--max-batch-size", str(batch), "--batch-wait-timeout-s", "2")
    app = build_app(backend)
    backend.predictor(backend.labels_for(LABEL_CONFIG))  # built before the timed requests

    async def four_requests() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
            body = {"tasks": [_task(1, url + "voc_1.png")], "label_config": LABEL_CONFIG}
            return await asyncio.gather(*(client.post("/predict", json=body) for _ in range(4)))

    responses = asyncio.run(four_requests())
    results = [r.json()["results"][0] for r in responses]
    assert all(r == results[0] for r in results) and results[0]["result"]
    assert backend.model_calls == calls


def test_invalid_flags_exit_2_naming_the_flag(clip_weights: Path, capsys, caplog) -> None:
    from jobs.serve import main

    cases = [
        (["--precision", "fp64"], "--precision 'fp64'"),
        (["--method", "nosuch"], "--method 'nosuch'"),
        (["--min-score", "2"], "--min-score must be within [0, 1]"),
        (["--max-batch-size", "0"], "--max-batch-size must be >= 1"),
        (["--allowed-hosts", "10.0.0.0/33"], "--allowed-hosts '10.0.0.0/33'"),
        (["--clip-weights", "/no/such.safetensors"], "/no/such.safetensors"),
        (["--pamr-precision", "bf16"], "--pamr-precision 'bf16'"),
    ]
    for flags, message in cases:
        caplog.clear()
        assert main(["--device", "cpu", *flags]) == 2
        assert message in caplog.text, (flags, caplog.text)


def test_rayservice_builder_takes_flag_names(clip_weights: Path, monkeypatch) -> None:
    from tiny_models import TINY_CLIP

    from pipeline.config import ConfigError
    from pipeline.serve.deployment import build

    monkeypatch.delenv("CHECKPOINT", raising=False)
    monkeypatch.setenv("CLIP_WEIGHTS", str(clip_weights))  # from the ConfigMap
    args = {"clip_model": TINY_CLIP, "device": "cpu", "num_replicas": 3}
    args |= {"num_gpus_per_replica": 0, "compile": False, "max_batch_size": 4}
    app = build(args)
    deployment = app._bound_deployment
    assert deployment.num_replicas == 3
    assert deployment.ray_actor_options["num_gpus"] == 0
    cfg, spec = deployment.init_args
    assert (cfg.max_batch_size, cfg.compile, spec.clip_weights) == (4, False, str(clip_weights))
    with pytest.raises(ConfigError, match="--num-replicas must be >= 1"):
        build({**args, "num_replicas": 0})
