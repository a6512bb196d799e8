"""Does the task layer cost anything? Training steps/s of restoration next to segmentation, and the
prediction time of a 4096 x 4096 image.

1. unetkit's :class:`~unetkit.training.Trainer` loop (real patches from the DataLoader, loss,
   backward, Adam) for the same network (U-Net depth 4, width 16, batch norm, 1 channel in and out)
   and the same batch (8 x 96 px), interleaved rounds: segmentation of ISBI 2012 (sigmoid + BCE on
   augmented patches), Gaussian denoising and x2 super-resolution of BSD400 (residual, L2/L1 on
   degraded patches), Noise2Void (blind spots). Median batches/s over the rounds.
2. ``Predictor.restore`` of a 4096 x 4096 grey image (denoising network) and ``Predictor.predict``
   of the same image by the segmentation network, both with the default tiles.

    python benchmarks/bench_restoration_speed.py --threads 1 --batches 10 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_train_speed import batches_per_second

from unetkit.config import TrainConfig, apply_overrides
from unetkit.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BSD = str(SHARED / "restoration" / "bsd400")
COMMON = {
    "model.depth": 4, "model.base_channels": 16, "model.padding": "same", "model.norm": "batch",
    "model.num_classes": 1, "data.patch_size": 96, "data.batch_size": 8, "data.val_fraction": 0.0,
}
SETTINGS = {
    "segmentation (ISBI, BCE)": {"data.train": str(SHARED / "isbi2012"), "loss.name": "bce"},
    "denoise gaussian:25 (BSD400, L2)": {
        "task": "restoration", "restoration.mode": "denoise", "data.train": BSD,
        "loss.name": "l2", "model.residual": True, "data.normalize.mode": "fixed",
    },
    "super-resolve x2 (BSD400, L1)": {
        "task": "restoration", "restoration.mode": "super_resolve", "restoration.scale": 2,
        "data.train": BSD, "loss.name": "l1", "model.residual": True,
        "data.normalize.mode": "fixed",
    },
    "Noise2Void (BSD400, L2 on blind spots)": {
        "task": "restoration", "restoration.mode": "noise2void", "data.train": BSD,
        "loss.name": "l2", "model.residual": True, "data.normalize.mode": "fixed",
    },
}


def make_trainer(name: str, batches: int, out: Path) -> Trainer:
    config = apply_overrides(TrainConfig(), {
        **COMMON, **SETTINGS[name], "data.patches_per_epoch": 8 * (batches + 1), "out": str(out),
    })
    trainer = Trainer(config, progress_bar=False, log=lambda _: None)
    trainer._setup()
    return trainer


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=4096, help="side of the predicted image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="unetkit-restoration-speed-"))
    trainers = {name: make_trainer(name, args.batches, work / str(i)) for i, name in enumerate(SETTINGS)}
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        for name, trainer in trainers.items():
            rates[name].append(batches_per_second(trainer, args.batches, r))
            print(f"round {r + 1} {name}: {rates[name][-1]:.3f} batches/s", flush=True)
    base = statistics.median(rates["segmentation (ISBI, BCE)"])
    print(f"\n| task | batches/s (8 x 96 px, {args.threads} thread(s)) | vs segmentation |")
    print("|---|---:|---:|")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:.3f} | {rate / base:.2f}x |")

    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size), dtype=np.uint8)
    print(f"\n| prediction of a {args.size} x {args.size} grey image | seconds | Mpx/s |")
    print("|---|---:|---:|")
    for label, name, call in (
        ("segmentation (labels)", "segmentation (ISBI, BCE)", "predict"),
        ("denoising (restored image)", "denoise gaussian:25 (BSD400, L2)", "restore"),
    ):
        trainer = trainers[name]
        predictor = trainer.task.predictor(trainer.model, trainer.config, trainer.data, trainer.device)
        start = time.perf_counter()
        getattr(predictor, call)(image)
        seconds = time.perf_counter() - start
        print(f"| {label} | {seconds:.1f} | {args.size**2 / seconds / 1e6:.3f} |", flush=True)
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
