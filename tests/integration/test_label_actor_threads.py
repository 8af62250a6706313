"""``--actor-threads 2`` on a real local Ray (CPU): the model actor really runs two batches at
once, and the rows are exactly those of ``--actor-threads 1``.

The job's model is built as ``jobs/label.py`` builds it (tiny random ZegCLIP checkpoint); the
factory wraps the real predictor in a probe that records how many ``predict`` calls were in
flight at once (each holds the call for a moment so that two queued batches overlap).
Three shards of two photos: the decode tasks hand the actor two blocks, so two calls can run.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
import time
from pathlib import Path

import pytest
from ray import cloudpickle
from tiny_models import save_tiny_zegclip_checkpoint

import zegclip
from jobs import label
from pipeline import schema, write
from pipeline.run import run_label_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the probe reaches the actor

VOCAB = "road\ncar, automobile\nsky\nperson\ntree\n"


class OverlapProbe:
    """A predictor around ``predictor`` that writes the most calls in flight at once to
    ``record`` (a file) and holds each call ``hold_s`` seconds before predicting."""

    def __init__(self, predictor, record: str, hold_s: float) -> None:
        self.predictor, self.record, self.hold_s = predictor, Path(record), hold_s
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def predict(self, images, sizes=None):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.record.write_text(str(self.most))
        try:
            time.sleep(self.hold_s)
            return self.predictor.predict(images, sizes)
        finally:
            with self.lock:
                self.now -= 1


def probed(factory, record: str, embeddings):
    """The job's predictor factory, its predictor wrapped in an :class:`OverlapProbe`."""
    return OverlapProbe(factory(embeddings), record, hold_s=0.3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(
        save_tiny_zegclip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-zegclip.safetensors")
    )


def _label(argv: list[str], record: Path) -> None:
    """The job in-process on the session's Ray, as ``jobs/label.py`` runs it, probed."""
    cfg = label.resolve_config(argv)
    vocab = label.load_vocab(cfg.vocab)
    cfg = dataclasses.replace(cfg, class_names=tuple(vocab.names))
    spec = label.make_spec(cfg)
    factory, encoder, prepare = label.model_callables(spec, vocab)
    factory = functools.partial(probed, factory, str(record))
    summary = run_label_job(cfg, factory, encoder, zegclip.describe(spec), prepare_image=prepare)
    assert summary.images == 6 and summary.errors == 0


def _rows(output: str) -> dict[str, dict]:
    rows = write.read_labels(output).to_pylist()
    assert all(r[schema.STATUS] == "ok" for r in rows)
    return {r[schema.IMAGE_ID]: r for r in rows}


def test_two_threads_overlap_and_store_the_one_thread_rows(
    ray_local: None, sample_photos, checkpoint: str, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_photos.jpegs(4) + sample_photos.pngs(2):  # two sizes, so two groups
        (src / p.name).write_bytes(p.read_bytes())
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(VOCAB)
    rows, most = {}, {}
    for threads in (1, 2):
        out, record = tmp_path / f"out{threads}", tmp_path / f"most{threads}.txt"
        argv = ["--vocab", str(vocab), "--input", str(src), "--output", str(out)]
        argv += ["--checkpoint", checkpoint, "--min-score", "0", "--device", "cpu"]
        argv += ["--batch-size", "2", "--shard-size", "2", "--concurrency", "1"]
        argv += ["--num-gpus-per-actor", "0", "--actor-threads", str(threads)]
        _label(argv, record)
        rows[threads], most[threads] = _rows(str(out)), int(record.read_text())
    assert most == {1: 1, 2: 2}
    assert len(rows[1]) == 6
    assert rows[2] == rows[1]
    assert len({r[schema.MASK]["bytes"] for r in rows[1].values()}) == 6  # a swap would show
