"""Content checks the tests share: same-size real photos, stored rows decoded, and the stored
mask and confidence of each image compared with a predictor's output for that image alone.

A regular module (like ``fakes``) so integration and GPU tests import it by name.
"""

from __future__ import annotations

import io
from importlib.resources import files
from pathlib import Path

import numpy as np

# Colour photos bundled in scikit-image's wheel (as examples/sample_photos.py): no ../shared.
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")


def same_size_photos(count: int, size: tuple[int, int] = (120, 160)) -> list[np.ndarray]:
    """``count`` distinct (H, W, 3) uint8 RGB photos of one ``size`` (H, W): 4:3 crops (left
    and right halves in turn) of scikit-image's bundled photos, resized with PIL bilinear."""
    from PIL import Image

    out: list[np.ndarray] = []
    for k in range(count):
        name = SKIMAGE_PHOTOS[k % len(SKIMAGE_PHOTOS)]
        photo = Image.open(io.BytesIO((files("skimage") / "data" / name).read_bytes()))
        photo = photo.convert("RGB")
        w, h = photo.size
        crop_w = min(w, h * 4 // 3)
        crop_h = crop_w * 3 // 4
        side = (k // len(SKIMAGE_PHOTOS)) % 2  # 0: top-left crop, 1: bottom-right crop
        left, top = (w - crop_w) * side, (h - crop_h) * side
        box = (left, top, left + crop_w, top + crop_h)
        out.append(np.asarray(photo.crop(box).resize(size[::-1], Image.BILINEAR)))
    return out


def write_pngs(images: list[np.ndarray], folder: Path) -> list[str]:
    """Save ``images`` as ``img000.png``, ...; returns the file names (= the job's image ids)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, image in enumerate(images):
        names.append(f"img{i:03d}.png")
        Image.fromarray(image).save(folder / names[-1])
    return names


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) uint8 image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def stored_maps(output: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """image id -> (label map, uint8 confidence) decoded from every ok row of a run."""
    from pipeline import encode, schema, write

    table = write.read_labels(output)
    maps = {}
    for row in table.to_pylist():
        assert row[schema.STATUS] == "ok", row[schema.ERROR]
        maps[row[schema.IMAGE_ID]] = (
            encode.decode_png(row[schema.MASK]["bytes"]),
            encode.decode_png(row[schema.CONFIDENCE]["bytes"]),
        )
    assert len(maps) == table.num_rows, "an image id appears twice"
    return maps


def alone(predictor, images: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """image id -> (label map, uint8 confidence) of ``predictor.predict([image])``, each alone."""
    out = {}
    for image_id, image in images.items():
        (prediction,) = predictor.predict([image])
        out[image_id] = (prediction.label_map, prediction.confidence)
    return out


def mismatches(stored: dict, expected: dict) -> dict[str, str]:
    """image id -> what differs (label pixels, largest confidence step); empty when equal."""
    assert set(stored) == set(expected), (sorted(stored), sorted(expected))
    found = {}
    for image_id, (mask, confidence) in expected.items():
        got_mask, got_confidence = stored[image_id]
        assert got_mask.shape == mask.shape, (image_id, got_mask.shape, mask.shape)
        labels = int(np.count_nonzero(got_mask != mask))
        step = int(np.abs(got_confidence.astype(int) - confidence.astype(int)).max())
        if labels or step:
            found[image_id] = f"{labels} label pixels differ, confidence up to {step}/255"
    return found


def label_agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Share of equal pixels over all pairs of (H, W) label maps."""
    equal = sum(int(np.count_nonzero(x == y)) for x, y in zip(a, b, strict=True))
    return equal / sum(x.size for x in a)


def distinct(maps: dict[str, tuple[np.ndarray, np.ndarray]]) -> bool:
    """True when no two images have the same (label map, confidence): a swap would show."""
    keys = [m.tobytes() + c.tobytes() for m, c in maps.values()]
    return len(set(keys)) == len(keys)
