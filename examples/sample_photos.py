"""Write a few public-domain colour photos that ship inside scikit-image to a folder.

Usage: ``python examples/sample_photos.py runs/photos`` (then point ``jobs/label.py --input`` at
it). The photos are bundled with the installed package, so this works offline on any machine.
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

# Colour photos bundled in scikit-image's wheel (skimage/data/; no download needed).
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")


def photo_bytes(name: str) -> bytes:
    """The encoded file of the bundled photo ``name`` (one of ``PHOTOS``)."""
    return (files("skimage") / "data" / name).read_bytes()


def write_sample_photos(out: Path) -> list[Path]:
    """Copy each bundled photo to ``out/``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PHOTOS:
        path = out / name
        path.write_bytes(photo_bytes(name))
        paths.append(path)
    return paths


def main() -> None:
    """Parse the output folder and write the photos."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the photos into")
    args = parser.parse_args()
    for path in write_sample_photos(args.out):
        print(path)


if __name__ == "__main__":
    main()
