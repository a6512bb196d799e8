"""Small models and RUN folders shared by the inference tests (CPU, tiny, seeded)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unetkit.checkpoint import save_model
from unetkit.data.classes import ClassInfo
from unetkit.data.normalize import NormalizeConfig
from unetkit.models import UNet


def tiny_unet(in_channels: int = 1, num_classes: int = 2, *, padding: str = "same", dims: int = 2,
              depth: int = 2, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(in_channels, num_classes, dims=dims, depth=depth, base_channels=4, padding=padding).eval()


def make_run(root: Path, model: UNet, classes: ClassInfo, normalize: NormalizeConfig | None = None) -> Path:
    """A RUN folder as `unetkit train` writes it: model files, classes.json, config.json."""
    run = root / "run"
    save_model(model, run)
    (run / "classes.json").write_text(json.dumps(classes.to_dict()))
    config = {"data": {"normalize": (normalize or NormalizeConfig()).to_dict()}}
    (run / "config.json").write_text(json.dumps(config))
    return run
