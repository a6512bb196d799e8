"""Shapes and a tiny training run shared by the tests of the instance routes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from unetkit.data.synthetic import write_synthetic_dataset


def ball(shape, centre, radius) -> np.ndarray:
    """Boolean ``(*S)``: the pixels within ``radius`` of ``centre``."""
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def two_touching(shape=(64, 64), centres=((32, 22), (32, 40)), radius=10) -> np.ndarray:
    """int32 labels ``(*S)`` of two overlapping discs, ids 1 and 2 (the first keeps the overlap)."""
    labels = np.zeros(shape, dtype=np.int32)
    first = ball(shape, centres[0], radius)
    labels[first] = 1
    labels[ball(shape, centres[1], radius) & ~first] = 2
    return labels


def train_tiny_run(tmp_path: Path, target: str) -> Path:
    """A one-epoch run of a depth-2, width-4 U-Net for ``target`` on three synthetic 48 px images."""
    from unetkit.cli import main

    data = write_synthetic_dataset(tmp_path / "data", 3, size=48, seed=0)
    run = tmp_path / "run"
    assert main(["train", str(data), "--target", target, "--preset", "tutorial", "--out", str(run),
                 "--no-progress", "--data.patch-size", "32", "--data.patches-per-epoch", "4",
                 "--data.batch-size", "2", "--model.depth", "2", "--model.base-channels", "4",
                 "--model.dropout", "0", "--budget.epochs", "1", "--val-fraction", "0.34"]) == 0
    return run


def augmented_map_patch(tmp_path: Path, target: str, maps_of: Callable[[np.ndarray], np.ndarray]):
    """For a flows or distance ``target``: check that a whole 48 px synthetic image's item without
    augmentation holds ``maps_of(instances)`` and the foreground, then return an augmented 40 px
    patch's maps ``(M, 24, 24)`` and mask ``(24, 24)`` (a 24 px output window)."""
    import torch

    from unetkit.data.classes import ClassInfo
    from unetkit.data.normalize import NormalizeConfig
    from unetkit.data.patches import PatchDataset
    from unetkit.data.samples import find_samples
    from unetkit.data.transforms import AugmentConfig

    samples = find_samples(write_synthetic_dataset(tmp_path / "syn", 1, size=48))
    plain = PatchDataset(samples, ClassInfo.binary(), patch_size=48, normalize=NormalizeConfig(),
                         augment=AugmentConfig.none(), target=target)
    item, instances = plain[0], plain._load(0).instances
    expected = maps_of(instances)
    assert item["maps"].shape == (len(expected), 48, 48) and item["maps"].dtype == torch.float32
    assert np.allclose(item["maps"].numpy(), expected)
    assert torch.equal(item["mask"], torch.from_numpy(instances > 0).long())
    turned = PatchDataset(samples, ClassInfo.binary(), patch_size=40, normalize=NormalizeConfig(),
                          augment=AugmentConfig.all_on(), target=target, output_size=24)[0]
    maps, mask = turned["maps"].numpy(), turned["mask"].numpy()
    assert maps.shape == (len(expected), 24, 24) and mask.shape == (24, 24)
    return maps, mask
