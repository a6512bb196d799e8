"""Helpers of the napari plugin tests: tiny RUN folders, synthetic images, waiting for the widget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unetkit.checkpoint import save_model
from unetkit.config import RestorationConfig, TrainConfig, apply_overrides
from unetkit.data.classes import ClassInfo
from unetkit.data.normalize import NormalizeConfig
from unetkit.data.synthetic import make_synthetic_cells, write_synthetic_dataset
from unetkit.losses import LossConfig
from unetkit.models import UNet
from unetkit.training import train
from unetkit.utils.atomic import atomic_write_json

WAIT_MS = 120_000


def train_tiny_run(root: Path) -> Path:
    """``unetkit train`` in miniature: depth 2, width 4, 6 steps on four 64x64 synthetic cell images
    (about 0.75 Dice on unseen cells)."""
    data = write_synthetic_dataset(root / "train", 4, size=64, seed=0)
    config = apply_overrides(TrainConfig(), {
        "model.depth": 2, "model.base_channels": 4, "model.num_classes": 1, "data.patch_size": 64,
        "data.batch_size": 4, "data.patches_per_epoch": 8, "data.val_fraction": 0.25, "budget.epochs": 3,
        "optim.lr": 0.02, "schedule.warmup_steps": 2, "threads": 1, "data.train": str(data),
        "out": str(root / "run"),
    })
    return train(config, progress_bar=False, log=lambda _: None).path


def untrained_run(root: Path, dims: int) -> Path:
    """A RUN folder of an untrained binary U-Net (depth 2, width 4) of ``dims`` spatial axes."""
    torch.manual_seed(0)
    model = UNet(1, 1, depth=2, base_channels=4, padding="same", dims=dims).eval()
    save_model(model, root)
    atomic_write_json(root / "classes.json", ClassInfo.binary().to_dict())
    atomic_write_json(root / "config.json", {"data": {"normalize": NormalizeConfig().to_dict()}})
    return root


def super_resolution_run(root: Path, scale: int = 2) -> Path:
    """A restoration RUN folder: a residual U-Net (untrained but for a random head) at ``scale``."""
    torch.manual_seed(0)
    model = UNet(1, 1, depth=2, base_channels=4, padding="same", residual=True).eval()
    with torch.no_grad():  # a residual head starts at zero (the identity): give it a correction to make
        model.head.weight.normal_(0.0, 0.2)
    save_model(model, root)
    config = TrainConfig(
        task="restoration", restoration=RestorationConfig(mode="super_resolve", scale=scale),
        loss=LossConfig(name="l1"),
    )
    atomic_write_json(root / "config.json", config.validate().to_dict())
    return root


def cells_image(shape: tuple[int, ...] = (96, 96), seed: int = 7,
                dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic cells image as uint8 ``(*S)`` and its true foreground ``(*S)`` bool."""
    cells = make_synthetic_cells(shape, seed=seed, dims=dims)
    return (np.clip(cells.image[0], 0, 1) * 255).astype(np.uint8), cells.semantic > 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def run_widget(qtbot, widget) -> None:
    """Press *Predict* and wait until the worker has finished and the layers are added."""
    widget.predict_button.click()
    qtbot.waitUntil(lambda: widget.worker is not None and widget.predict_button.isEnabled(), timeout=WAIT_MS)
