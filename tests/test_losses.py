"""Losses: values on hand-worked cases, ignore index, weights and gradients."""

import math

import pytest
import torch

from unetkit.losses import (
    LossConfig,
    SegmentationLoss,
    cross_entropy_loss,
    pixel_cross_entropy,
    soft_dice_loss,
)

LN2 = math.log(2.0)
LN43 = math.log(4.0 / 3.0)


def binary_case():
    # Two pixels: logit 0 on a background pixel (loss ln 2), logit ln 3 on a foreground pixel
    # (sigmoid = 3/4, loss ln 4/3).
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]])  # (1, 1, 1, 2)
    target = torch.tensor([[[0, 1]]])  # (1, 1, 2)
    return logits, target


def test_binary_cross_entropy_hand_values():
    logits, target = binary_case()
    assert cross_entropy_loss(logits, target).item() == pytest.approx((LN2 + LN43) / 2, rel=1e-6)
    per_pixel = pixel_cross_entropy(logits, target)
    assert per_pixel.shape == (1, 1, 2)
    assert per_pixel.flatten().tolist() == pytest.approx([LN2, LN43], rel=1e-6)


def test_softmax_cross_entropy_matches_binary_formulation():
    # Two-channel logits (0, z) give the same probabilities as one sigmoid logit z.
    z = torch.tensor([[[-1.0, 2.0, 0.5]]])
    target = torch.tensor([[[0, 1, 1]]])
    two = torch.stack([torch.zeros_like(z), z], dim=1)
    assert cross_entropy_loss(two, target).item() == pytest.approx(
        cross_entropy_loss(z.unsqueeze(1), target).item(), rel=1e-6
    )


def test_ignore_index_excludes_pixels_from_mean():
    logits = torch.tensor([[[[0.0, math.log(3.0), 50.0]]]])
    target = torch.tensor([[[0, 1, 255]]])
    # The ignored pixel (a confident wrong logit) neither adds loss nor counts in the mean.
    value = cross_entropy_loss(logits, target, ignore_index=255).item()
    assert value == pytest.approx((LN2 + LN43) / 2, rel=1e-6)


def test_weight_map_and_class_weights():
    logits, target = binary_case()
    weights = torch.tensor([[[1.0, 3.0]]])
    assert cross_entropy_loss(logits, target, weight_map=weights).item() == pytest.approx(
        (LN2 + 3 * LN43) / 2, rel=1e-6
    )
    assert cross_entropy_loss(logits, target, class_weights=[2.0, 0.5]).item() == pytest.approx(
        (2 * LN2 + 0.5 * LN43) / 2, rel=1e-6
    )
    with pytest.raises(ValueError, match="class_weights needs 2"):
        cross_entropy_loss(logits, target, class_weights=[1.0, 1.0, 1.0])


def test_soft_dice_binary_hand_value():
    # Saturated logits: probabilities exactly 1, 1, 0; target 1, 0, 0.
    logits = torch.tensor([[[[100.0, 100.0, -100.0]]]])
    target = torch.tensor([[[1, 0, 0]]])
    # Dice = 2*1 / (2 + 1) = 2/3.
    assert soft_dice_loss(logits, target, smooth=0.0).item() == pytest.approx(1 / 3, rel=1e-6)
    # A perfect prediction scores 0.
    perfect = torch.tensor([[[[100.0, -100.0, -100.0]]]])
    assert soft_dice_loss(perfect, target, smooth=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_multiclass_with_ignore_and_background():
    # Three classes, four pixels; the last pixel is ignored.
    big = 100.0
    logits = torch.full((1, 3, 1, 4), -big)
    predicted = [0, 1, 1, 2]
    for i, k in enumerate(predicted):
        logits[0, k, 0, i] = big
    target = torch.tensor([[[0, 1, 2, 7]]])
    # Class 0: 1 pred, 1 true, 1 overlap -> 1. Class 1: 2 pred, 1 true, 1 overlap -> 2/3.
    # Class 2: 0 pred (the pixel predicting 2 is ignored), 1 true -> 0.
    expected_all = 1 - (1 + 2 / 3 + 0) / 3
    expected_fg = 1 - (2 / 3 + 0) / 2
    assert soft_dice_loss(logits, target, ignore_index=7, smooth=0.0).item() == pytest.approx(expected_all)
    assert soft_dice_loss(
        logits, target, ignore_index=7, smooth=0.0, include_background=False
    ).item() == pytest.approx(expected_fg)


def test_segmentation_loss_combinations():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    ce = cross_entropy_loss(logits, target)
    dice = soft_dice_loss(logits, target)
    assert SegmentationLoss(LossConfig(name="ce"))(logits, target).item() == pytest.approx(ce.item())
    assert SegmentationLoss(LossConfig(name="dice"))(logits, target).item() == pytest.approx(dice.item())
    combined = SegmentationLoss(LossConfig(name="ce_dice", dice_weight=0.5))(logits, target)
    assert combined.item() == pytest.approx(ce.item() + 0.5 * dice.item(), rel=1e-6)
    weight = torch.rand(2, 8, 8) + 0.5
    weighted = SegmentationLoss(LossConfig(name="weighted_ce"))(logits, target, weight)
    assert weighted.item() == pytest.approx(cross_entropy_loss(logits, target, weight_map=weight).item())
    with pytest.raises(ValueError, match="data.weight_map"):
        SegmentationLoss(LossConfig(name="weighted_ce"))(logits, target)
    with pytest.raises(ValueError, match="loss.name must be one of"):
        SegmentationLoss(LossConfig(name="focal"))


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="crop the target"):
        cross_entropy_loss(torch.zeros(1, 2, 8, 8), torch.zeros(1, 6, 6, dtype=torch.long))


@pytest.mark.parametrize(
    "name,channels",
    [
        ("ce", 1),
        ("ce", 3),
        ("dice", 1),
        ("dice", 3),
        ("ce_dice", 2),
        ("weighted_ce", 2),
    ],
)
def test_loss_gradients_match_finite_differences(name, channels):
    torch.manual_seed(1)
    logits = torch.randn(2, channels, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, max(2, channels), (2, 3, 3))
    target[0, 0, 0] = 9  # one ignored pixel
    weight = torch.rand(2, 3, 3, dtype=torch.float64) + 0.5
    loss = SegmentationLoss(LossConfig(name=name, class_weights=None), ignore_index=9)
    assert torch.autograd.gradcheck(lambda x: loss(x, target, weight), (logits,))
    loss(logits, target, weight).backward()
    assert logits.grad[0, :, 0, 0].abs().max().item() == 0.0  # ignored pixel gets no gradient
