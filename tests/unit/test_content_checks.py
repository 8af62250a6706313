"""The content-check helpers (``tests/content.py``) catch what they exist for: two same-size
images whose stored maps are swapped, and inputs on which a swap could not show."""

from __future__ import annotations

import numpy as np
from content import distinct, mismatches, same_size_photos


def _maps(photos: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A stand-in prediction per photo: (dominant channel, brightness as uint8)."""
    return {
        f"img{i}": (p.argmax(axis=2).astype(np.uint8), p.max(axis=2).astype(np.uint8))
        for i, p in enumerate(photos)
    }


def test_photos_are_distinct_and_of_one_size() -> None:
    photos = same_size_photos(8, (120, 160))
    assert {p.shape for p in photos} == {(120, 160, 3)}
    assert len({p.tobytes() for p in photos}) == 8


def test_swapped_rows_are_reported_and_equal_rows_are_not() -> None:
    expected = _maps(same_size_photos(3))
    assert distinct(expected)
    assert mismatches(dict(expected), expected) == {}
    swapped = {**expected, "img0": expected["img1"], "img1": expected["img0"]}
    found = mismatches(swapped, expected)
    assert set(found) == {"img0", "img1"}
    assert "label pixels differ" in found["img0"]


def test_identical_maps_are_not_distinct() -> None:
    maps = _maps(same_size_photos(2))
    assert not distinct({**maps, "copy": maps["img0"]})
