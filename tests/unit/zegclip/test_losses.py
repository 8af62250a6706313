"""Focal/dice values against hand computation; ignore pixels are all-zero targets (official)."""

from __future__ import annotations

import math

import torch

from zegclip.train.losses import dice_loss, one_hot_targets, seg_loss, sigmoid_focal_loss

LN2 = math.log(2)


def test_one_hot_targets_zero_on_ignore():
    t = one_hot_targets(torch.tensor([[[1, 255]]]), 2)
    assert t.shape == (1, 2, 1, 2)
    assert t[0, :, 0, 0].tolist() == [0.0, 1.0]
    assert t[0, :, 0, 1].tolist() == [0.0, 0.0]


def test_focal_ignore_pixels_are_negatives_for_every_class():
    # Zero logits: p = 0.5, ce = ln 2, (1 - p_t)^2 = 0.25.
    logits = torch.zeros(1, 2, 1, 2)
    targets = one_hot_targets(torch.tensor([[[0, 255]]]), 2)
    loss = sigmoid_focal_loss(logits, targets, 1.0)
    # channel 0: [0.25 * ln2 * 0.25 (positive), 0.75 * ln2 * 0.25 (ignore pixel = negative)]
    # channel 1: two negatives 0.75 * ln2 * 0.25 ; mean over pixels, sum over channels.
    expected = (0.0625 + 0.1875) * LN2 / 2 + 0.1875 * LN2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    excluded = 0.0625 * LN2 + 0.1875 * LN2  # what excluding the ignore pixel would give
    assert not math.isclose(loss.item(), excluded, rel_tol=1e-3)


def test_focal_gamma_and_num_masks():
    p = 1 / (1 + math.exp(-2.0))
    loss = sigmoid_focal_loss(torch.full((1, 1, 1, 1), 2.0), torch.ones(1, 1, 1, 1), 4.0)
    assert math.isclose(loss.item(), 0.25 * (1 - p) ** 2 * -math.log(p) / 4, rel_tol=1e-6)


def test_dice_only_present_classes_with_smoothing():
    logits = torch.zeros(1, 2, 1, 2)  # p = 0.5 everywhere
    targets = one_hot_targets(torch.tensor([[[0, 255]]]), 2)
    # class 0 present: 1 - (2 * 0.5 + 1) / (1.0 + 1 + 1); class 1 absent -> not counted.
    assert math.isclose(dice_loss(logits, targets, 1.0).item(), 1 / 3, rel_tol=1e-6)


def test_seg_loss_weights_and_num_masks_over_batch():
    logits = torch.zeros(2, 2, 1, 2)
    labels = torch.tensor([[[0, 255]], [[0, 1]]])
    total, parts = seg_loss(logits, labels)
    assert parts["num_masks"] == 3.0  # image 0: {0}; image 1: {0, 1}
    focal = (0.0625 + 0.1875) / 2 + 0.1875 + (0.0625 + 0.1875) / 2 * 2
    dice = 1 / 3 + 2 * (1 - (1 + 1) / (1 + 1 + 1))
    assert math.isclose(parts["focal"], focal * LN2 / 3, rel_tol=1e-6)
    assert math.isclose(parts["dice"], dice / 3, rel_tol=1e-6)
    assert math.isclose(total.item(), 100 * parts["focal"] + parts["dice"], rel_tol=1e-6)


def test_seg_loss_upsamples_logits_and_has_gradients():
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    total, _ = seg_loss(logits, torch.randint(0, 3, (1, 8, 8)))
    total.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_focal_is_the_official_formula_exactly():
    """ZegCLIP's ``criterion.py`` focal term written out; torchvision's op gives it bit for bit."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g) * 4
    targets = (torch.rand(2, 3, 8, 8, generator=g) > 0.7).float()
    prob = logits.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** 2)
    loss = (0.25 * targets + 0.75 * (1 - targets)) * loss
    expected = loss.flatten(2).mean(-1).sum() / 3.0
    assert torch.equal(sigmoid_focal_loss(logits, targets, 3.0), expected)


def test_pixel_weight_none_or_ones_is_the_official_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[0, :2] = 255
    plain, _ = seg_loss(logits, labels)
    ones, _ = seg_loss(logits, labels, pixel_weight=torch.ones(2, 8, 8))
    assert torch.allclose(plain, ones)


def test_zero_pixel_weight_removes_those_pixels():
    """Pixels of weight 0 change nothing: predictions there may be anything."""
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8)
    labels = torch.randint(0, 3, (1, 8, 8))
    weight = torch.ones(1, 8, 8)
    weight[:, 4:] = 0.0
    other = logits.clone()
    other[..., 4:, :] = torch.randn(1, 3, 4, 8) * 5
    a, _ = seg_loss(logits, labels, pixel_weight=weight)
    b, _ = seg_loss(other, labels, pixel_weight=weight)
    c, _ = seg_loss(other, labels)
    assert torch.allclose(a, b) and not torch.allclose(b, c)


def test_split_provenance_strips_marks_and_weighs_machine_pixels():
    from zegclip.train.data import MACHINE
    from zegclip.train.loop import split_provenance

    labels = torch.tensor([[[0, 1 + MACHINE], [255, 2 + MACHINE]]])
    ids, weight = split_provenance(labels, 0.25)
    assert ids.tolist() == [[[0, 1], [255, 2]]]
    assert weight.tolist() == [[[1.0, 0.25], [1.0, 0.25]]]
    ids, weight = split_provenance(labels, 1.0)
    assert weight is None and ids.tolist() == [[[0, 1], [255, 2]]]
    assert split_provenance(torch.tensor([[[0, 255]]]), 0.5)[1] is None
