"""Segmentation losses on logits: cross-entropy (pixel-weighted), soft Dice and their sum.

Every loss takes logits ``(N, K, *S)`` and integer targets ``(N, *S)`` (class ids, with
``ignore_index`` where a pixel is not scored). ``K == 1`` is a binary problem scored with a
sigmoid (binary cross-entropy); ``K >= 2`` uses a softmax (cross-entropy). Probabilities
always come from :func:`unetkit.activation.logits_to_probabilities`, the same function
the predictor uses, so the loss optimises exactly what is predicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .activation import MAP_SCALE, logits_to_probabilities

LOSSES = ("ce", "bce", "dice", "ce_dice", "weighted_ce")


def _valid_mask(target: torch.Tensor, ignore_index: Optional[int]) -> torch.Tensor:
    """``(N, *S)`` bool: pixels that are scored."""
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != ignore_index


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if (
        logits.dim() != target.dim() + 1
        or logits.shape[0] != target.shape[0]
        or logits.shape[2:] != target.shape[1:]
    ):
        raise ValueError(
            f"logits (N, K, *S) and target (N, *S) do not match: {tuple(logits.shape)} vs "
            f"{tuple(target.shape)} (for valid-padding nets crop the target to the output size)"
        )


def pixel_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: Optional[int] = None,
    class_weights: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Per-pixel cross-entropy ``(N, *S)`` (0 at ignored pixels).

    ``K == 1``: binary cross-entropy with logits against ``target == 1``; ``K >= 2``: softmax
    cross-entropy. ``class_weights`` (one per class, 2 for a binary head) scale each pixel by
    the weight of its true class.
    """
    _check_shapes(logits, target)
    valid = _valid_mask(target, ignore_index)
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    if logits.shape[1] == 1:
        loss = F.binary_cross_entropy_with_logits(
            logits[:, 0], (safe_target == 1).to(logits.dtype), reduction="none"
        )
    else:
        loss = F.cross_entropy(logits, safe_target, reduction="none")
    if class_weights is not None:
        weights = torch.as_tensor(class_weights, dtype=loss.dtype, device=loss.device)
        n_classes = max(2, logits.shape[1])
        if weights.numel() != n_classes:
            raise ValueError(f"class_weights needs {n_classes} values (one per class), got {weights.numel()}")
        loss = loss * weights[safe_target]
    return loss * valid


def cross_entropy_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight_map: Optional[torch.Tensor] = None,
    ignore_index: Optional[int] = None,
    class_weights: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Mean (weighted) cross-entropy over the scored pixels; a scalar.

    ``weight_map`` ``(N, *S)`` is the paper's pixel weighting (eq. 1-2: class balance plus
    the border term ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))``): each pixel's loss is
    multiplied by its weight, and the sum is divided by the number of scored pixels.
    """
    loss = pixel_cross_entropy(logits, target, ignore_index=ignore_index, class_weights=class_weights)
    if weight_map is not None:
        if weight_map.shape != target.shape:
            raise ValueError(
                f"weight_map must have the target's shape {tuple(target.shape)}, "
                f"got {tuple(weight_map.shape)}"
            )
        loss = loss * weight_map
    count = _valid_mask(target, ignore_index).sum().clamp_min(1)
    return loss.sum() / count


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: Optional[int] = None,
    smooth: float = 1.0,
    include_background: bool = True,
) -> torch.Tensor:
    """``1 - mean soft Dice`` over classes, pooled over the batch; a scalar.

    Per class ``k``: ``(2 * sum(p_k * t_k) + smooth) / (sum(p_k) + sum(t_k) + smooth)`` over all
    scored pixels of the batch. A binary head (``K == 1``) scores the foreground only; a
    softmax head scores every class unless ``include_background=False`` (class 0 dropped).
    A class absent from both target and prediction scores ~1 thanks to ``smooth``.
    """
    _check_shapes(logits, target)
    valid = _valid_mask(target, ignore_index).unsqueeze(1).to(logits.dtype)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # sums over a whole batch overflow half precision
    probs = logits_to_probabilities(logits)
    safe_target = torch.where(valid[:, 0].bool(), target, torch.zeros_like(target))
    if logits.shape[1] == 1:
        onehot = (safe_target == 1).unsqueeze(1).to(probs.dtype)
    else:
        onehot = F.one_hot(safe_target, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
        if not include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
    reduce_dims = [0, *range(2, probs.dim())]
    intersection = (probs * onehot * valid).sum(reduce_dims)
    denominator = (probs * valid).sum(reduce_dims) + (onehot * valid).sum(reduce_dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - dice.mean()


@dataclass
class LossConfig:
    """Which loss to train with.

    ``name``: ``"ce"`` (cross-entropy; binary cross-entropy for a 1-channel head), ``"bce"``
    (same, the name people expect for binary), ``"dice"`` (soft Dice), ``"ce_dice"``
    (``ce + dice_weight * dice``, for imbalanced classes) or ``"weighted_ce"`` (the paper's
    pixel-weighted cross-entropy with the border weight map; needs ``data.weight_map``).
    ``class_weights``: one weight per class for the cross-entropy, or ``None``.
    """

    name: str = "ce_dice"
    dice_weight: float = 1.0
    class_weights: Optional[list[float]] = None
    dice_include_background: bool = True
    smooth: float = 1.0


class SegmentationLoss(nn.Module):
    """The loss a :class:`LossConfig` describes: ``loss(logits, target, weight_map=None)``."""

    def __init__(self, config: LossConfig, ignore_index: Optional[int] = None) -> None:
        super().__init__()
        if config.name not in LOSSES:
            raise ValueError(f"loss.name must be one of {LOSSES}, got {config.name!r}")
        self.config = config
        self.ignore_index = ignore_index

    @property
    def needs_weight_map(self) -> bool:
        return self.config.name == "weighted_ce"

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight_map: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``(N, K, *S)`` logits, ``(N, *S)`` int64 target, optional ``(N, *S)`` weights -> scalar."""
        name = self.config.name
        if name == "weighted_ce" and weight_map is None:
            raise ValueError("loss 'weighted_ce' needs the border weight map: set data.weight_map true")
        total = logits.new_zeros(())
        if name in ("ce", "bce", "ce_dice", "weighted_ce"):
            total = total + cross_entropy_loss(
                logits,
                target,
                weight_map=weight_map if name == "weighted_ce" else None,
                ignore_index=self.ignore_index,
                class_weights=self.config.class_weights,
            )
        if name in ("dice", "ce_dice"):
            weight = self.config.dice_weight if name == "ce_dice" else 1.0
            total = total + weight * soft_dice_loss(
                logits,
                target,
                ignore_index=self.ignore_index,
                smooth=self.config.smooth,
                include_background=self.config.dice_include_background,
            )
        return total


class ForegroundMapLoss(nn.Module):
    """The loss of the flows and distance targets (Cellpose's for the flows): the
    :class:`SegmentationLoss` of ``config`` on the foreground logit (channel 0, a binary problem: BCE,
    + Dice with ``ce_dice``) plus half the mean squared error between the map channels and
    ``MAP_SCALE`` times the true maps (flow components or distances), over the scored pixels."""

    def __init__(self, config: LossConfig, ignore_index: Optional[int] = None) -> None:
        super().__init__()
        self.foreground = SegmentationLoss(config, ignore_index)
        self.ignore_index = ignore_index

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
        weight_map: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``(N, 1 + M, *S)`` logits, ``(N, *S)`` int64 foreground target, ``(N, M, *S)`` true maps,
        optional ``(N, *S)`` weights -> scalar."""
        if maps.shape[1:] != (logits.shape[1] - 1, *logits.shape[2:]) or maps.shape[0] != logits.shape[0]:
            raise ValueError(
                f"logits (N, 1 + M, *S) and maps (N, M, *S) do not match: {tuple(logits.shape)} vs "
                f"{tuple(maps.shape)}"
            )
        foreground = self.foreground(logits[:, :1], target, weight_map)
        valid = _valid_mask(target, self.ignore_index).unsqueeze(1).to(logits.dtype)
        squared = (logits[:, 1:] - MAP_SCALE * maps.to(logits.dtype)).square() * valid
        count = (valid.sum() * maps.shape[1]).clamp_min(1)
        return foreground + 0.5 * squared.sum() / count
