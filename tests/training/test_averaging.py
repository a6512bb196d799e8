"""The exponential moving average of the weights and the trainer's use of it."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from unetkit.config import TrainConfig, apply_overrides
from unetkit.data.synthetic import write_synthetic_dataset
from unetkit.training import train
from unetkit.training.averaging import UPDATES_KEY, WeightAverage


def test_average_follows_the_formula_with_its_warm_up():
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    average = WeightAverage(model, decay=0.5)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    average.update(model)  # first update: decay min(0.5, 2 / 11)
    d = 2 / 11
    assert torch.allclose(average.module[0].weight, d * start + (1 - d) * (start + 1))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    before = average.module[0].weight.clone()
    average.update(model)  # second: min(0.5, 3 / 12) = 0.25
    assert torch.allclose(average.module[0].weight, 0.25 * before + 0.75 * model[0].weight)
    assert average.module[1].num_batches_tracked == model[1].num_batches_tracked  # integers copied

    state = average.state_dict()
    assert int(state[UPDATES_KEY]) == 2
    other = WeightAverage(model, decay=0.5)
    other.load_state_dict(state)
    assert other.updates == 2 and torch.equal(other.module[0].weight, average.module[0].weight)
    assert not any(p.requires_grad for p in average.module.parameters())
    with pytest.raises(ValueError, match="decay in"):
        WeightAverage(model, decay=1.5)


def test_trainer_validates_and_saves_the_average(tmp_path):
    data = write_synthetic_dataset(tmp_path / "cells", 6, size=64, seed=0)
    settings = {
        "model.depth": 2, "model.base_channels": 8, "model.num_classes": 1, "data.patch_size": 64,
        "data.patches_per_epoch": 24, "data.val_fraction": 0.25, "budget.epochs": 1, "threads": 1,
        "data.train": str(data),
    }
    runs = {}
    for ema in (None, 0.9):
        out = str(tmp_path / f"ema{ema}")
        runs[ema] = train(apply_overrides(TrainConfig(), {**settings, "optim.ema": ema, "out": out}),
                          progress_bar=False, log=lambda _: None)
    # Training itself is unchanged (same losses); the validated and saved model is the average.
    assert runs[None].history[0]["loss"] == runs[0.9].history[0]["loss"]
    assert runs[None].history[0]["dice"] != runs[0.9].history[0]["dice"]
    checkpoint = next((runs[0.9].path / "state").glob("ckpt-*"))
    saved = load_file(str(runs[0.9].path / "model.safetensors"))
    average = load_file(str(checkpoint / "model_average.safetensors"))
    last = load_file(str(checkpoint / "model_last.safetensors"))
    assert int(average.pop(UPDATES_KEY)) == 6
    assert saved.keys() == average.keys() and all(torch.equal(saved[k], average[k]) for k in saved)
    assert any(not torch.equal(saved[k], last[k]) for k in saved)
