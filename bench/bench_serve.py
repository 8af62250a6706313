"""Load on the Label Studio ML backend (``jobs/serve.py`` app on a local Ray Serve).

N concurrent clients each send ``--requests`` sequential ``POST /predict`` requests of one task
(Label Studio's shape: one task per request when an annotator opens a task); the task's image
is a real VOC photo served over loopback HTTP, fetched by the backend like a Label Studio URL.
Reports requests/s and p50/p95 latency per client count, with request batching on
(``--max-batch-size``) and off (1): both are deployed side by side (``/b<size>/predict``, one
replica each) and measured alternately for ``--rounds`` rounds, so drifting machine load hits
both alike. The model is the tiny random CLIP of the tests on CPU by default (``--device``;
pass ``--clip-model ViT-B-16 --clip-weights FILE`` for a real one).

Usage: ``python bench/bench_serve.py [--clients 1 4 16] [--requests 8] [--max-batch-size 8]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import requests  # noqa: E402
from fakes import free_port, http_folder  # noqa: E402
from tiny_models import DATA_ROOT, TINY_CLIP, save_random_clip_weights  # noqa: E402

CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="tag" toName="image"><Label value="person"/><Label value="dog"/>
<Label value="car"/><Label value="grass"/><Label value="sky"/></BrushLabels></View>"""


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=8, help="sequential requests per client")
    p.add_argument("--rounds", type=int, default=3, help="alternating on/off measurements")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--batch-wait-timeout-s", type=float, default=0.02)
    p.add_argument("--device", default="cpu")
    p.add_argument("--clip-model", default=TINY_CLIP)
    p.add_argument("--clip-weights", default=None, help="default: the tiny CLIP, seeded")
    p.add_argument("--num-cpus", type=int, default=4, help="local Ray logical CPUs (2 replicas)")
    return p.parse_args()


def _load(url: str, photos: list[str], clients: int, per_client: int) -> tuple[float, list[float]]:
    """(wall seconds, latencies) of ``clients`` threads x ``per_client`` requests."""

    def client(k: int) -> list[float]:
        session, out = requests.Session(), []
        for i in range(per_client):
            task = {"id": i, "data": {"image": photos[(k + i) % len(photos)]}}
            start = time.perf_counter()
            answer = session.post(url, json={"tasks": [task], "label_config": CONFIG}, timeout=600)
            out.append(time.perf_counter() - start)
            assert answer.status_code == 200 and "result" in answer.json()["results"][0], (
                answer.text
            )
        return out

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = [t for part in pool.map(client, range(clients)) for t in part]
    return time.perf_counter() - start, latencies


def _deploy(args: argparse.Namespace, weights: str, port: int, batch: int) -> str:
    """Deploy the app with ``--max-batch-size batch`` at ``/b<batch>``; returns its name."""
    from ray import serve

    from jobs.serve import prepare
    from pipeline.serve.deployment import application

    flags = ["--clip-model", args.clip_model, "--clip-weights", weights, "--device", args.device]
    flags += ["--allowed-hosts", "127.0.0.1", "--max-batch-size", str(batch)]
    flags += ["--batch-wait-timeout-s", str(args.batch_wait_timeout_s), "--port", str(port)]
    cfg, spec = prepare(flags)
    app = application(cfg, spec, num_gpus=1 if args.device == "cuda" else 0)
    serve.run(app, name=f"b{batch}", route_prefix=f"/b{batch}")
    return f"b{batch}"


def main() -> None:
    args = _args()
    logging.basicConfig(level=logging.WARNING)
    import ray
    from ray import serve

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    for name in ("voc_0.png", "voc_1.png", "voc_114.png", "voc_2.png"):
        src = DATA_ROOT / "voc2012-val-sample" / "images" / name
        if src.is_file():
            shutil.copy(src, work / name)
    names = sorted(p.name for p in work.glob("*.png"))
    assert names, f"needs the VOC sample photos under {DATA_ROOT}"
    weights = args.clip_weights or str(save_random_clip_weights(work / "tiny.safetensors"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    modes = (args.max_batch_size, 1)
    urls = {b: f"http://127.0.0.1:{port}/{_deploy(args, weights, port, b)}/predict" for b in modes}
    rows = []
    with http_folder(work) as images:
        photos = [images + n for n in names]
        for batch in modes:
            _load(urls[batch], photos, 2, 2)  # warm-up: predictor built, vocabulary encoded
        for clients in args.clients:
            walls = {b: 0.0 for b in modes}
            lats: dict[int, list[float]] = {b: [] for b in modes}
            for r in range(args.rounds):
                for batch in modes if r % 2 == 0 else modes[::-1]:
                    wall, lat = _load(urls[batch], photos, clients, args.requests)
                    walls[batch] += wall
                    lats[batch] += lat
            for batch in modes:
                q = statistics.quantiles(lats[batch], n=20)
                rps = len(lats[batch]) / walls[batch]
                rows.append((batch, clients, rps, statistics.median(lats[batch]), q[18]))
    rows.sort(key=lambda row: (-row[0], row[1]))
    serve.shutdown()
    ray.shutdown()
    print("| max batch | clients | requests/s | p50 latency (s) | p95 latency (s) |")
    print("|---:|---:|---:|---:|---:|")
    for batch, clients, rps, p50, p95 in rows:
        print(f"| {batch} | {clients} | {rps:.2f} | {p50:.3f} | {p95:.3f} |")


if __name__ == "__main__":
    main()
