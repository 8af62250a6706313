"""Real photos for tests that need a photo but no ground truth, on any clone.

They come from the five public-domain colour photos bundled in scikit-image (the README demo's,
``examples/sample_photos.py``), so no download and no ``../shared`` is needed. Tests that need
more photos than five get distinct crops: photo ``i`` is a window of bundled photo ``i % 5``
shifted by ``i // 5`` steps, so every file has its own pixels and bytes. Only tests that need
ground-truth masks use the CamVid / VOC samples in ``../shared/data`` (``tiny_models.DATA_ROOT``).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from examples.sample_photos import PHOTOS, photo_bytes

JPEG_SIZE = (480, 360)  # width, height: CamVid's frame size, what these tests used before
PNG_LONG_SIDE = 500  # PASCAL VOC's longest side
_STEP = 6  # pixels a crop window moves per variant


def bundled_photo(index: int) -> Image.Image:
    """RGB crop number ``index`` (any int >= 0) of the bundled photos, at the photo's scale."""
    base = Image.open(io.BytesIO(photo_bytes(PHOTOS[index % len(PHOTOS)]))).convert("RGB")
    shift = _STEP * (index // len(PHOTOS))
    width, height = base.size
    left, top = shift % (width // 4), (shift // 2) % (height // 4)
    return base.crop((left, top, width - width // 4 + left, height - height // 4 + top))


class SamplePhotos:
    """Writes real photos into ``folder`` on demand (once per name) and returns their paths.

    Args:
        folder: where the files go (a session temporary folder).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def jpegs(self, n: int) -> list[Path]:
        """``n`` distinct JPEG photos of 480 x 360 (quality 90), named ``frame_000.jpg``, ..."""
        return [self._file(f"frame_{i:03d}.jpg", i, "JPEG") for i in range(n)]

    def pngs(self, n: int) -> list[Path]:
        """``n`` distinct PNG photos of varied sizes (longest side 500), ``photo_000.png``, ..."""
        return [self._file(f"photo_{i:03d}.png", i + 2, "PNG") for i in range(n)]

    def _file(self, name: str, index: int, fmt: str) -> Path:
        path = self.folder / name
        if not path.exists():
            photo = bundled_photo(index)
            if fmt == "JPEG":
                photo = _cover(photo, JPEG_SIZE)
                photo.save(path, format=fmt, quality=90)
            else:
                photo.thumbnail((PNG_LONG_SIDE, PNG_LONG_SIDE))
                photo.save(path, format=fmt)
        return path


def _cover(photo: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``photo`` centre-cropped to the aspect ratio of ``size``, then resized to it."""
    width, height = photo.size
    scale = min(width / size[0], height / size[1])
    crop_w, crop_h = round(size[0] * scale), round(size[1] * scale)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return photo.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.BILINEAR)
