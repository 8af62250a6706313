"""What the output lease costs a run: requests and seconds per lease operation, local and S3.

Runs each operation of ``pipeline.lease`` ``--repeat`` times against a local folder and against a
moto S3 server on 127.0.0.1 (started here), counting the requests the lease store makes, and
prints a table plus the formula for one run::

    python bench/bench_lease.py --repeat 50

A run holding the lease for T seconds and writing P parts makes
``2 (acquire: read + conditional write) + T / (TTL / 4) renewals (1 conditional PUT each)
+ 2 P writer checks (1 read before each Parquet file and marker) + 2 driver checks + 1 release``
requests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import lease, lease_store  # noqa: E402

CALLS: Counter[str] = Counter()


def _count(cls: type, name: str) -> None:
    original = getattr(cls, name)

    def counted(self, *args, **kwargs):
        CALLS[name] += 1
        return original(self, *args, **kwargs)

    setattr(cls, name, counted)


def _moto() -> str:
    from moto.server import ThreadedMotoServer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fakes import free_port

    port = free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return "s3://bench/out"


def _time(fn) -> tuple[float, int]:
    """(seconds, store requests) of one call."""
    before = sum(CALLS.values())
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, sum(CALLS.values()) - before


def measure(output: str, repeat: int) -> dict[str, tuple[float, float]]:
    """Median ms and requests per operation."""
    rows: dict[str, list[tuple[float, int]]] = {}
    for _ in range(repeat):
        held = lease.Lease(output, job="bench", ttl_s=3600)  # no heartbeat during the timing
        rows.setdefault("acquire", []).append(_time(held.acquire))
        rows.setdefault("renew (heartbeat)", []).append(
            _time(lambda h=held: h._write(lease.HELD, h.generation, h._version))
        )
        rows.setdefault("writer check (verify)", []).append(_time(held.token.verify))
        rows.setdefault("release", []).append(_time(held.release))
    return {
        op: (1000 * statistics.median(s for s, _ in v), statistics.median(n for _, n in v))
        for op, v in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    for cls in (lease_store.S3Store, lease_store.FileStore):
        for name in ("read", "create", "swap"):
            _count(cls, name)
    targets = {"local": tempfile.mkdtemp(prefix="bench-lease-") + "/out", "moto S3": _moto()}
    print(f"| operation | {' | '.join(f'{t} ms | {t} requests' for t in targets)} |")
    print(f"|---|{'---|---|' * len(targets)}")
    results = {t: measure(uri, args.repeat) for t, uri in targets.items()}
    for op in results["local"]:
        cells = " | ".join(f"{results[t][op][0]:.2f} | {results[t][op][1]:.0f}" for t in targets)
        print(f"| {op} | {cells} |")


if __name__ == "__main__":
    main()
