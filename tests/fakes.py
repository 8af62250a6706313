"""Fakes the tests share: a pure-numpy predictor, a call-counting encoder, loopback ports.

A regular module (not a conftest) so that any test file can import it by name, whatever the
order pytest loads the conftest files in; the Ray fixture registers it for pickling by value.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A pure-numpy predictor for pipeline tests: colour-threshold segmentation.


COLOUR_CLASSES = ("red", "green", "blue")
DARK_THRESHOLD = 40  # pixels whose brightest channel is below this are unlabelled


class ColourPrediction:
    """Holds ``label_map`` (H, W) uint8, ``confidence`` (H, W) float32, ``class_counts`` (3,)."""

    def __init__(self, label_map, confidence, class_counts) -> None:
        self.label_map = label_map
        self.confidence = confidence
        self.class_counts = class_counts


class ColourPredictor:
    """Labels each pixel with its dominant RGB channel; dark pixels are unlabelled (255)."""

    def __init__(self, class_embeddings) -> None:
        assert class_embeddings.shape[0] == len(COLOUR_CLASSES)
        self.calls = 0

    def predict(self, images):
        import numpy as np

        self.calls += 1
        out = []
        for image in images:
            rgb = image.astype(np.float32)
            labels = rgb.argmax(axis=2).astype(np.uint8)
            peak = rgb.max(axis=2)
            labels[peak < DARK_THRESHOLD] = 255
            confidence = peak / (rgb.sum(axis=2) + 1e-6)
            counts = np.bincount(labels[labels < 3].ravel(), minlength=3).astype(np.int64)
            out.append(ColourPrediction(labels, confidence.astype(np.float32), counts))
        return out


def colour_predictor_factory(class_embeddings):
    """``PredictorFactory`` for :class:`ColourPredictor`."""
    return ColourPredictor(class_embeddings)


class CountingEncoder:
    """``VocabularyEncoder`` returning a fixed (3, 8) embedding and counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self):
        import numpy as np

        self.calls += 1
        return np.eye(len(COLOUR_CLASSES), 8, dtype=np.float32)


def wait_for_free_cpus(count: float, timeout_s: float = 120.0) -> None:
    """Collect garbage until the session Ray has ``count`` CPUs free (actor pools of a dataset
    that failed midway live until the dataset is garbage-collected)."""
    import gc
    import time

    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        gc.collect()
        free = ray.available_resources().get("CPU", 0.0)
        if free >= count or time.monotonic() > deadline:
            assert free >= count, f"only {free} CPUs free after {timeout_s} s"
            return
        time.sleep(0.5)


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """An uncompressed tar archive holding ``members`` (names are kept as given, even hostile)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@contextlib.contextmanager
def http_folder(
    root: Path, redirects: dict[str, str] | None = None, seen: list | None = None
) -> Iterator[str]:
    """Serve the files of ``root`` over HTTP on 127.0.0.1 (a real server, in a thread).

    Args:
        redirects: request path -> ``Location`` answered with a 302.
        seen: when given, ``(path, Authorization header or None)`` of each request is appended.

    Yields:
        The base URL, ``http://127.0.0.1:<port>/``.
    """
    import functools
    import http.server
    import threading

    moves = dict(redirects or {})

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if seen is not None:
                seen.append((self.path, self.headers.get("Authorization")))
            if self.path in moves:
                self.send_response(302)
                self.send_header("Location", moves[self.path])
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# A Label Studio labelling config with three brush classes (one with a synonym), and its classes.
LABEL_CONFIG = """<View>
  <Image name="photo" value="$img"/>
  <BrushLabels name="paint" toName="photo">
    <Label value="person"/><Label value="dog"/><Label value="grass, lawn"/>
  </BrushLabels>
</View>"""
NAMES = ("person", "dog", "grass, lawn")
