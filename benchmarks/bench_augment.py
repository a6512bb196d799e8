"""Augmented-patch throughput vs. the training step rate of ``UNet.paper()``; MONAI for comparison.

Measures, in one run on this machine:

1. unetkit's ``PatchDataset``: 256x256 patches with EVERY augmentation on (probability 1: flips,
   rot90, rotation, scale, translation, elastic, brightness, contrast, gamma, noise, blur) and the
   border weight map, through a ``torch.utils.data.DataLoader`` with the default number of workers
   (``default_num_workers()``) and with 0 workers (in the main process);
2. the same kind of pipeline built from MONAI dictionary transforms (random crop, flips, rot90,
   ``Rand2DElasticd`` with rotation/scale/translation in one resampling, intensity transforms);
3. one training step of ``UNet.paper()``: a 572x572 tile, batch 1, forward + backward + Adam step.

Prints a markdown table. Data: the ISBI 2012 images (``../shared/data/isbi2012``) if present, else
synthetic cells. Run with ``flock /tmp/unetkit-heavy.lock .venv/bin/python benchmarks/bench_augment.py``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from unetkit.data import (
    AugmentConfig,
    BorderWeightConfig,
    NormalizeConfig,
    PatchDataset,
    default_num_workers,
    detect_classes,
    find_samples,
    load_sample,
    write_synthetic_dataset,
)
from unetkit.models import UNet

PATCH = 256
ISBI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "isbi2012"


def loader_rate(dataset: Dataset, workers: int, seconds: float, warmup: int) -> float:
    """Patches per second delivered by a DataLoader (batch 1) after ``warmup`` patches (worker start,
    every image read and its weight map computed once)."""
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, shuffle=False,
                        persistent_workers=workers > 0)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(it)
        count += 1
    return count / (time.perf_counter() - start)


class MonaiPatches(Dataset):
    """MONAI's equivalent: crop + flips + rot90 + elastic/affine in one resampling + intensity."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], length: int) -> None:
        from monai import transforms as mt

        self.items = [{"image": im, "label": lab[None].astype(np.float32)} for im, lab in zip(images, labels)]
        self.length = length
        keys = ["image", "label"]
        self.transform = mt.Compose([
            mt.RandSpatialCropd(keys, roi_size=(PATCH, PATCH), random_size=False),
            mt.RandFlipd(keys, prob=1.0, spatial_axis=0),
            mt.RandFlipd(keys, prob=1.0, spatial_axis=1),
            mt.RandRotate90d(keys, prob=1.0),
            mt.Rand2DElasticd(
                keys, spacing=(PATCH // 2, PATCH // 2), magnitude_range=(0.0, 10.0), prob=1.0,
                rotate_range=np.pi, scale_range=(0.2, 0.2), translate_range=(12, 12),
                mode=("bilinear", "nearest"), padding_mode="reflection",
            ),
            mt.RandShiftIntensityd("image", offsets=0.1, prob=1.0),
            mt.RandScaleIntensityd("image", factors=0.25, prob=1.0),
            mt.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=1.0),
            mt.RandGaussianNoised("image", std=0.05, prob=1.0),
            mt.RandGaussianSmoothd("image", sigma_x=(0.5, 1.5), sigma_y=(0.5, 1.5), prob=1.0),
        ])
        self.transform.set_random_state(seed=0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.transform(self.items[index % len(self.items)])


def paper_step_rate(steps: int) -> float:
    model = UNet.paper()
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(1, 1, 572, 572)
    y = torch.randint(0, 2, (1, 388, 388))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optim.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optim.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per throughput measurement")
    parser.add_argument("--steps", type=int, default=3, help="timed UNet.paper() training steps")
    parser.add_argument("--skip-monai", action="store_true")
    args = parser.parse_args()

    tmp = None
    if ISBI.is_dir():
        root, source = ISBI, "ISBI 2012 (25 EM sections, 512x512)"
    else:
        tmp = tempfile.TemporaryDirectory()
        root, source = write_synthetic_dataset(Path(tmp.name) / "syn", 8, size=512), "synthetic cells 512x512"
    samples = find_samples(root)
    classes = detect_classes(samples)
    ours = PatchDataset(samples, classes, patch_size=PATCH, normalize=NormalizeConfig(),
                        augment=AugmentConfig.all_on(), weight_map=BorderWeightConfig(),
                        patches_per_epoch=10**6)
    no_weights = PatchDataset(samples, classes, patch_size=PATCH, normalize=NormalizeConfig(),
                              augment=AugmentConfig.all_on(), patches_per_epoch=10**6)
    workers = default_num_workers()
    rows = []
    for n in sorted({0, workers}):
        rows.append((f"unetkit PatchDataset, all augmentations + weight map, {n} workers",
                     loader_rate(ours, n, args.seconds, len(samples) + 4)))
        rows.append((f"unetkit PatchDataset, all augmentations, no weight map, {n} workers",
                     loader_rate(no_weights, n, args.seconds, len(samples) + 4)))
    if not args.skip_monai:
        whole = [load_sample(s, classes, NormalizeConfig()) for s in samples]
        monai = MonaiPatches([im for im, _ in whole], [lab for _, lab in whole], 10**6)
        for n in sorted({0, workers}):
            rows.append((f"MONAI dict transforms, equivalent pipeline (no weight map), {n} workers",
                         loader_rate(monai, n, args.seconds, len(samples) + 4)))
    step_rate = paper_step_rate(args.steps)

    print(f"data: {source}; patch {PATCH}x{PATCH}; torch threads {torch.get_num_threads()}; "
          f"CPU cores {os.cpu_count()}; default loader workers {workers}\n")
    print("| pipeline | patches/s | x UNet.paper() step rate |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / step_rate:.0f}x |")
    print(f"| UNet.paper() training step, 572x572, batch 1, fwd+bwd+Adam | {step_rate:.3f} steps/s "
          f"({1 / step_rate:.1f} s/step) | 1x |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
