"""The ML backend's work: project setup and task predictions, batched across requests.

One :class:`Backend` per Ray Serve replica (or per test). Each labelling config (its class
names) gets one predictor, built from the label job's ``LabelerSpec`` with the vocabulary
embedding computed once (``encode_vocabulary_for``, cached on disk too) and kept for the
``--max-projects`` most recent configs. Images of concurrent requests are fetched and resized in
threads, then gathered by ``serve.batch`` into one ``SegPredictor.predict(images, sizes)`` call
per config.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from pipeline.decode import decode_image
from pipeline.export.labelstudio import brush_results
from pipeline.serve.config import ServeConfig
from pipeline.serve.fetch import FetchError, ImageFetcher
from pipeline.serve.labelconfig import LabelConfigError, ProjectLabels, parse_label_config

logger = logging.getLogger("jobs.serve")

CLASSES_FIELD = "classes"  # optional task data field: the labels wanted for this task


class TaskError(ValueError):
    """This task cannot be predicted; the message becomes its error entry."""


@dataclass
class Work:
    """One image on its way to the batched model call.

    Attributes:
        labels: the project's classes (selects the predictor).
        image: (h, w, 3) uint8 RGB, resized to the model's short side.
        size: (H, W) of the original image (the label map's size).
    """

    labels: ProjectLabels
    image: np.ndarray
    size: tuple[int, int]


def model_version(described: dict[str, Any]) -> str:
    """``<checkpoint or method>-<clip model>-<spec hash>``, e.g. ``naclip-ViT-B-16-1a2b3c4d``."""
    checkpoint = described.get("checkpoint")
    head = checkpoint.rsplit("/", 1)[-1].rsplit(".", 1)[0] if checkpoint else described["method"]
    clip = str(described.get("clip_model", "")).rsplit("/", 1)[-1].removesuffix(".json")
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{head}-{clip}")[:80] + f"-{digest}"


class Backend:
    """Setup and predict for Label Studio, independent of the HTTP layer.

    Args:
        cfg: the serve flags.
        spec: the label job's ``zegclip.LabelerSpec`` (already validated).
        fetcher: image source; default from the flags and the environment.
    """

    def __init__(self, cfg: ServeConfig, spec: Any, fetcher: ImageFetcher | None = None) -> None:
        import zegclip

        self.cfg, self.spec = cfg, spec
        self.model_version = model_version(zegclip.describe(spec))
        self.fetcher = fetcher or ImageFetcher.from_env(
            cfg.allowed_hosts,
            cfg.allowed_buckets,
            max_bytes=cfg.max_image_bytes,
            timeout_s=cfg.fetch_timeout_s,
        )
        self.prepare: Callable[[np.ndarray], np.ndarray] = zegclip.image_preparer(spec)
        self._predictors: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        # One batch queue per backend (a class-level ``@serve.batch`` would share one queue,
        # bound to the first event loop, between every instance in the process).
        self.predict_batch = serve.batch(
            max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_timeout_s
        )(self._predict_works)
        self.model_calls = 0  # batched predict calls so far (tests, logs)

    # -- projects ------------------------------------------------------------------------------

    def labels_for(self, label_config: str) -> ProjectLabels:
        """Parse and check a labelling config (background words must not be label names).

        Raises:
            LabelConfigError: the config cannot be served.
        """
        from zegclip import validate

        labels = parse_label_config(label_config)
        try:
            validate.check_background(self.spec.background, labels.vocabulary)
        except ValueError as e:
            raise LabelConfigError(str(e)) from e
        return labels

    def predictor(self, labels: ProjectLabels) -> Any:
        """The predictor of ``labels`` (built and its vocabulary encoded once; LRU-cached)."""
        import zegclip

        with self._lock:
            if labels.key in self._predictors:
                self._predictors.move_to_end(labels.key)
                return self._predictors[labels.key]
            vocab = labels.vocabulary
            emb = zegclip.encode_vocabulary_for(self.spec, vocab)
            predictor = zegclip.build_predictor(self.spec, vocab, emb)
            logger.info("predictor ready for %d classes (%s)", len(vocab), labels.key)
            self._predictors[labels.key] = predictor
            while len(self._predictors) > self.cfg.max_projects:
                self._predictors.popitem(last=False)
            return predictor

    async def setup(self, label_config: str) -> dict[str, Any]:
        """``/setup``: ready the predictor of the project's classes; returns the model version.

        Raises:
            LabelConfigError: the config cannot be served.
        """
        labels = self.labels_for(label_config)
        await asyncio.to_thread(self.predictor, labels)
        return {"model_version": self.model_version}

    # -- predictions ---------------------------------------------------------------------------

    async def predict(
        self, tasks: Sequence[dict], label_config: str, context: Any = None
    ) -> list[dict]:
        """``/predict``: one prediction (or error entry) per task, in task order.

        Raises:
            LabelConfigError: the config cannot be served (the whole request is refused).
        """
        labels = self.labels_for(label_config)
        wanted = context_labels(context)
        return list(await asyncio.gather(*(self._one(t, labels, wanted) for t in tasks)))

    async def _one(self, task: dict, labels: ProjectLabels, wanted: list[str]) -> dict:
        task_id = task.get("id")
        try:
            keep = selected_classes(labels, [*wanted, *task_classes(task)])
            work = await asyncio.to_thread(self._load, task, labels)
            prediction = await self.predict_batch(work)
        except (TaskError, FetchError, LabelConfigError) as e:
            logger.warning("task %s: %s", task_id, e)
            return {"task": task_id, "error": str(e), "model_version": self.model_version}
        return self.to_label_studio(prediction, labels, keep)

    def _load(self, task: dict, labels: ProjectLabels) -> Work:
        data = task.get("data")
        if not isinstance(data, dict) or labels.data_key not in data:
            raise TaskError(f"task data has no {labels.data_key!r} field (the <Image> value)")
        raw = self.fetcher.fetch(data[labels.data_key])
        try:
            rgb, _ = decode_image(raw, self.cfg.max_image_pixels)
        except (ValueError, OSError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise TaskError(f"unreadable image ({type(e).__name__}: {e})") from e
        return Work(labels, self.prepare(rgb), rgb.shape[:2])

    async def _predict_works(self, works: list[Work]) -> list[Any]:
        """Batched model call (``self.predict_batch`` takes one ``Work`` and gathers them):
        one ``predict(images, sizes)`` per labelling config."""
        return await asyncio.to_thread(self._predict_now, works)

    def _predict_now(self, works: list[Work]) -> list[Any]:
        out: list[Any] = [None] * len(works)
        groups: dict[str, list[int]] = {}
        for i, work in enumerate(works):
            groups.setdefault(work.labels.key, []).append(i)
        for members in groups.values():
            predictor = self.predictor(works[members[0]].labels)
            images = [works[i].image for i in members]
            sizes = [works[i].size for i in members]
            for i, prediction in zip(members, predictor.predict(images, sizes)):
                out[i] = prediction
            self.model_calls += 1
        return out

    def to_label_studio(
        self, prediction: Any, labels: ProjectLabels, keep: set[int] | None = None
    ) -> dict:
        """A Label Studio prediction: one ``brushlabels`` RLE region per class present.

        ``score`` is the mean confidence over the kept labelled pixels; each region carries its
        own mean.
        """
        label_map = prediction.label_map
        if keep is not None:
            label_map = np.where(np.isin(label_map, sorted(keep)), label_map, 255).astype(np.uint8)
        regions = brush_results(label_map, labels.names, labels.from_name, labels.to_name)
        counts, sums = prediction.class_counts, prediction.confidence_sums
        for region in regions:
            c = int(region["id"][1:])
            region["score"] = float(sums[c] / counts[c])
        kept = [int(r["id"][1:]) for r in regions]
        total = float(counts[kept].sum()) if kept else 0.0
        score = float(sums[kept].sum() / total) if total else 0.0
        return {"result": regions, "score": score, "model_version": self.model_version}


def context_labels(context: Any) -> list[str]:
    """Labels chosen in Label Studio's interactive context (``params.context.result``)."""
    if not isinstance(context, dict):
        return []
    names: list[str] = []
    for item in context.get("result") or []:
        value = item.get("value") if isinstance(item, dict) else None
        if isinstance(value, dict):
            for key in ("brushlabels", "labels"):
                names.extend(str(v) for v in value.get(key) or [])
    return names


def task_classes(task: dict) -> list[str]:
    """The task's own ``data.classes`` (a list or comma-separated text), if any."""
    data = task.get("data") if isinstance(task, dict) else None
    value = data.get(CLASSES_FIELD) if isinstance(data, dict) else None
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise TaskError(f"data.{CLASSES_FIELD} must be a list of label names or comma-separated text")


def selected_classes(labels: ProjectLabels, wanted: list[str]) -> set[int] | None:
    """Indices of ``wanted`` among the project's labels; None (all) when nothing is wanted.

    Raises:
        TaskError: a wanted name that is not one of the project's labels.
    """
    if not wanted:
        return None
    index = {n: i for i, n in enumerate(labels.names)}
    unknown = [w for w in wanted if w not in index]
    if unknown:
        raise TaskError(
            f"unknown class {', '.join(map(repr, unknown))}; the project's labels are "
            f"{', '.join(labels.names)}"
        )
    return {index[w] for w in wanted}
