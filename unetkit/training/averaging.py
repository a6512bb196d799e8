"""An exponential moving average of the network's weights: the model that is validated and saved.

Averaging the weights of the last few hundred optimiser steps smooths out the step-to-step noise of
small-batch training, which otherwise shows as validation scores that jump from epoch to epoch.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

#: Key of the update counter in :meth:`WeightAverage.state_dict` (saved beside the weights).
UPDATES_KEY = "__weight_average_updates__"


class WeightAverage:
    """``average = d * average + (1 - d) * weights`` after each optimiser step (batch-norm statistics too).

    The decay ramps up as ``d = min(decay, (1 + n) / (10 + n))`` over the first ``n`` updates, so a
    short run is not dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema must be a decay in (0, 1), e.g. 0.99, got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.updates = 0
        self._averaged = list(self.module.state_dict().values())  # views, updated in place

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self._averaged, model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.lerp_(current, 1.0 - decay)
            else:
                average.copy_(current)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.module.state_dict(), UPDATES_KEY: torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        self.updates = int(state.pop(UPDATES_KEY))
        self.module.load_state_dict(state)
