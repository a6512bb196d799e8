"""The one place that turns logits into probabilities and labels (used by losses and predictors).

One output channel means a binary problem with a sigmoid; two or more mean a per-pixel
softmax over the classes. A flows or distance network (``data.target`` in
:data:`unetkit.data.instances.MAP_TARGETS`) has a foreground logit and regression maps times
:data:`MAP_SCALE`: the ``D`` flow components (:mod:`unetkit.flows`) or one distance map.
"""

from __future__ import annotations

import numpy as np
import torch

#: A flows or distance network predicts its maps (unit flow vectors, distances in 0-1) times this
#: (Cellpose's scaling of the flows: they then weigh about as much as the foreground in the loss).
MAP_SCALE = 5.0


def logits_to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``(N, K, *S)`` logits -> probabilities of the same shape.

    ``K == 1``: sigmoid (probability of the foreground); ``K >= 2``: softmax over dim 1.
    """
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def foreground_and_maps(logits: torch.Tensor) -> torch.Tensor:
    """A flows or distance network's ``(N, 1 + M, *S)`` logits -> ``(N, 2 + M, *S)``: the background and
    foreground probabilities (a sigmoid of channel 0), then the maps (flows in pixels per step, or
    distances) on their own scale (``/ MAP_SCALE``)."""
    foreground = torch.sigmoid(logits[:, :1])
    return torch.cat([1.0 - foreground, foreground, logits[:, 1:] / MAP_SCALE], dim=1)


def probabilities_to_labels(probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``(N, K, *S)`` probabilities -> class ids ``(N, *S)`` (int64).

    ``K == 1``: foreground where the probability exceeds ``threshold``; otherwise argmax.
    """
    if probabilities.shape[1] == 1:
        return (probabilities[:, 0] > threshold).long()
    return probabilities.argmax(dim=1)


def logits_to_labels(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``(N, K, *S)`` logits -> class ids ``(N, *S)``."""
    return probabilities_to_labels(logits_to_probabilities(logits), threshold)


def num_output_classes(num_channels: int) -> int:
    """Number of classes a head with ``num_channels`` outputs predicts (1 channel = 2 classes)."""
    return 2 if num_channels == 1 else num_channels


def expand_binary(probs: np.ndarray) -> np.ndarray:
    """``(1, *S)`` foreground probabilities -> ``(2, *S)`` (background, foreground); others unchanged."""
    if probs.shape[0] != 1:
        return probs
    return np.concatenate([1.0 - probs, probs], axis=0)
