"""Wheels the GPU machine lacks, for ``bench/gpu_check.sh``: ``python bench/gpu_wheels.py``.

The device image (Python 3.12, torch, pyarrow, pandas, cv2, scikit-image...; see
``docs/gpu.md``) has no Ray and no open_clip. This downloads them and the few packages they need
that it lacks into ``.whl/`` (git-ignored), for CPython 3.12 on manylinux x86-64, and repacks
Ray's wheel without ``ray/jars/`` (Java workers, unused; 45.6 MB left, as in the reference GPU
run) so that the working tree, the wheels and the photos fit the device's 64 MiB transfer.
It also copies 64 CamVid test photos (and 8 of their masks) to ``.bench-photos/`` (git-ignored)
when ``../shared`` holds them: ``../shared`` does not travel to the device.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The versions this project's CPU environment runs (constraints.txt pins ray and jsonschema).
WHEELS = (
    "ray==2.60.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "open_clip_torch==3.3.0",
    "ftfy==6.3.1",
    "wcwidth==0.9.4",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
DROP = ("ray/jars/",)
CAMVID = REPO_ROOT.parent / "shared" / "data" / "camvid" / "test"


def download(dest: Path) -> None:
    """``pip download`` every wheel (no dependencies: the device image has the rest)."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest)]
    subprocess.run([*cmd, *WHEELS], check=True)


def repack(wheel: Path, drop: tuple[str, ...] = DROP) -> None:
    """Rewrite ``wheel`` without the members under ``drop`` (their RECORD lines too)."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            if item.filename.startswith(drop):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not line.startswith(drop)).encode()
            out.writestr(item, data)
    tmp.replace(wheel)


def copy_photos(dest: Path, count: int = 64, masks: int = 8) -> int:
    """The first ``count`` CamVid test photos into ``dest``, and the ground-truth masks of the
    first ``masks`` into ``dest/testannot`` (``bench/bench_pamr.py`` builds its scores from
    them); none without ``../shared``."""
    paths = sorted(CAMVID.glob("*.jpg"))[:count]
    (dest / "testannot").mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy(path, dest / path.name)
    for path in paths[:masks]:
        mask = CAMVID.parent / "testannot" / f"{path.stem}.png"
        if mask.is_file():
            shutil.copy(mask, dest / "testannot" / mask.name)
    return len(paths)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", type=Path, default=REPO_ROOT / ".whl")
    p.add_argument("--photos", type=Path, default=REPO_ROOT / ".bench-photos")
    args = p.parse_args()
    shutil.rmtree(args.dest, ignore_errors=True)
    download(args.dest)
    for wheel in args.dest.glob("ray-*.whl"):
        repack(wheel)
    total = sum(w.stat().st_size for w in args.dest.glob("*.whl"))
    photos = copy_photos(args.photos)
    print(f"{args.dest}: {total / 2**20:.1f} MiB of wheels; {photos} photos in {args.photos}")


if __name__ == "__main__":
    main()
