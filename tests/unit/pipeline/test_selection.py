"""Review-set strategies on hand-made pools: the order each promises, exactly."""

from __future__ import annotations

import numpy as np

from pipeline import selection


def _pool() -> selection.Pool:
    # classes: 0 common (every image), 1 rare (image d only), 2 medium (b, c)
    pixels = np.array(
        [
            [100, 0, 0],  # a: all class 0
            [50, 0, 50],  # b
            [60, 0, 40],  # c
            [90, 10, 0],  # d: the only one with class 1
            [0, 0, 0],  # e: nothing labelled
        ]
    )
    confidence = np.array([0.9, 0.5, 0.7, 0.8, 0.0])
    return selection.Pool(list("abcde"), pixels, confidence)


def test_least_confident_first() -> None:
    assert selection.least_confident(_pool(), 3) == [4, 1, 2]


def test_class_balanced_takes_the_rarest_class_first() -> None:
    order = selection.class_balanced(_pool(), 5)
    assert order[0] == 3  # d: class 1 is in one image
    assert order[1] == 1  # then class 2: b has its most pixels
    assert sorted(order) == [0, 1, 2, 3, 4] and order[-1] == 4  # e (nothing labelled) last


def test_diverse_is_farthest_first_from_the_least_confident() -> None:
    order = selection.diverse(_pool(), 3)
    assert order[0] == 4  # least confident
    emb = selection.composition(_pool())
    # the second pick is the farthest from e's (all-zero) composition
    far = np.linalg.norm(emb - emb[4], axis=1)
    assert far[order[1]] == far.max()
    assert len(set(order)) == 3


def test_k_centre_picks_cluster_representatives() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(0, 0.1, (20, 2)) for c in centres])
    picks = selection.k_centre(points, 3, first=0)
    assert sorted(p // 20 for p in picks) == [0, 1, 2]


def test_random_is_seeded_and_without_repeats() -> None:
    pool = _pool()
    assert selection.random(pool, 4, seed=1) == selection.random(pool, 4, seed=1)
    assert len(set(selection.random(pool, 5, seed=2))) == 5


def test_without_removes_reviewed_ids() -> None:
    left = selection.without(_pool(), {"d", "e"})
    assert left.ids == ["a", "b", "c"] and left.pixels.shape == (3, 3)


def test_k_centre_never_repeats_when_images_look_alike() -> None:
    picks = selection.k_centre(np.zeros((5, 3)), 4, first=2)
    assert picks[0] == 2 and len(set(picks)) == 4
