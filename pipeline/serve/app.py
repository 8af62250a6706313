"""Label Studio's ML-backend HTTP protocol on FastAPI, over a ``pipeline.serve.backend.Backend``.

Routes (as Label Studio 1.23 calls them, ``label_studio/ml/api_connector.py``):

- ``GET /health`` (and ``/``): ``{"status": "UP", "model_version": ...}``.
- ``POST /setup`` ``{"project", "schema": <label config>, ...}``: ``{"model_version": ...}``.
- ``POST /predict`` ``{"tasks": [...], "label_config", "project", "params": {"context"}}``:
  ``{"results": [one prediction or error entry per task], "model_version": ...}``.
- ``POST /webhook``: acknowledged (this backend does not train); ``GET /versions``,
  ``GET /metrics``; ``POST /train``: 501 with the reason.

A malformed request gets a 4xx with ``{"error": reason}``; a task that cannot be predicted gets
an entry ``{"task": id, "error": reason}`` without ``result`` (Label Studio then stores no
prediction for it and logs the entry) while the others get theirs.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pipeline.serve.backend import Backend
from pipeline.serve.labelconfig import LabelConfigError

MAX_TASKS = 1000
MODEL_CLASS = "ZegCLIPLabeler"


class SetupRequest(BaseModel):
    """``/setup`` body; Label Studio also sends ``hostname`` and ``access_token``, unused here
    (the backend's own ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` are used)."""

    schema_: str = Field(alias="schema", min_length=1)
    project: str | None = None


class PredictRequest(BaseModel):
    """``/predict`` body."""

    tasks: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_TASKS)
    label_config: str = Field(min_length=1)
    project: str | None = None
    params: dict[str, Any] | None = None


class WebhookRequest(BaseModel):
    """``/webhook`` body: an event name and whatever Label Studio attaches."""

    action: str = Field(min_length=1)


def _reason(error: RequestValidationError) -> str:
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return f"malformed request: {where}: {first.get('msg', 'invalid')}"


def build_app(backend: Backend) -> FastAPI:
    """The ASGI app of ``backend`` (Ray Serve wraps it with ``serve.ingress``; tests use it
    directly with FastAPI's ``TestClient``)."""
    app = FastAPI(title="zegclip-labeler ML backend", docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _reason(error)}, status_code=422)

    @app.exception_handler(LabelConfigError)
    async def bad_config(_: Request, error: LabelConfigError) -> JSONResponse:
        return JSONResponse({"error": f"labelling config: {error}"}, status_code=400)

    @app.get("/")
    @app.get("/health")
    async def health() -> dict:
        return {"status": "UP", "model_class": MODEL_CLASS, "model_version": backend.model_version}

    @app.post("/setup")
    async def setup(body: SetupRequest) -> dict:
        return await backend.setup(body.schema_)

    @app.post("/predict")
    async def predict(body: PredictRequest) -> dict:
        context = (body.params or {}).get("context")
        results = await backend.predict(body.tasks, body.label_config, context)
        return {"results": results, "model_version": backend.model_version}

    @app.post("/webhook", status_code=200)
    async def webhook(body: WebhookRequest) -> dict:
        return {"status": "ok", "action": body.action, "handled": False}

    @app.post("/train")
    async def train() -> JSONResponse:
        reason = "this backend predicts only; train checkpoints with jobs/train.py"
        return JSONResponse({"error": reason}, status_code=501)

    @app.get("/versions")
    async def versions() -> dict:
        return {"versions": [backend.model_version], "model_version": backend.model_version}

    @app.get("/metrics")
    async def metrics() -> dict:
        return {"model_calls": backend.model_calls}

    return app
