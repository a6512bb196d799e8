"""``unetkit demo``: the whole job on synthetic cells, on the CPU, in about two minutes.

Writes synthetic microscopy-like cell images with masks (training and held-out test folders),
trains a small same-padding U-Net within a time budget, scores it on the held-out images, and
leaves the curves, overlays and report in the output folder.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..config import TrainConfig, apply_overrides

#: The demo's network and schedule; small enough to learn the synthetic cells in ~1.5 CPU minutes.
DEMO_SETTINGS = {
    "model.depth": 3,
    "model.base_channels": 16,
    "model.padding": "same",
    "model.norm": "batch",
    "model.num_classes": 1,
    "data.patch_size": 128,
    "data.batch_size": 8,
    "data.patches_per_epoch": 64,
    "data.val_fraction": 0.2,
    "loss.name": "ce_dice",
    "optim.lr": 2e-3,
    "schedule.warmup_steps": 10,
    "budget.epochs": 60,
    "num_samples": 3,
}
TRAIN_IMAGES, TEST_IMAGES, SIZE = 16, 6, 256


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train and evaluate on synthetic cells (about 2 CPU minutes)", description=__doc__
    )
    parser.add_argument("--out", default="demo_run", help="output folder (default: demo_run; replaced)")
    parser.add_argument("--minutes", type=float, default=1.5, help="training budget in minutes (default 1.5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def demo_config(out: Path, minutes: float) -> TrainConfig:
    """The demo's training config for the synthetic data under ``out/data``."""
    return apply_overrides(
        TrainConfig(),
        {
            **DEMO_SETTINGS,
            "data.train": str(out / "data" / "train"),
            "out": str(out / "run"),
            "budget.max_minutes": minutes,
        },
    )


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import write_synthetic_dataset
    from ..training import train
    from ..training.evaluation import evaluate_run

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    print(
        f"1/3 writing synthetic cells: {TRAIN_IMAGES} training and {TEST_IMAGES} held-out images "
        f"of {SIZE}x{SIZE}"
    )
    write_synthetic_dataset(out / "data" / "train", TRAIN_IMAGES, size=SIZE, seed=0)
    write_synthetic_dataset(out / "data" / "test", TEST_IMAGES, size=SIZE, seed=1)
    print(f"2/3 training a small U-Net on the CPU for at most {args.minutes:g} minutes")
    result = train(demo_config(out, args.minutes), progress_bar=not args.no_progress)
    print("3/3 evaluating on the held-out images")
    report = out / "report"
    summary = evaluate_run(result.path, out / "data" / "test", report)
    dice = summary["dice"]
    print()
    print(
        f"held-out Dice {dice:.3f}, IoU {summary['iou']:.3f}, pixel error {summary['pixel_error']:.4f} "
        f"on {summary['num_images']} images" + ("" if dice >= 0.9 else "  (below the 0.90 expected)")
    )
    print(f"  curves:    {result.path / 'curves.png'}")
    print(
        f"  overlays:  {result.path / 'samples'}/ (validation, image | truth | prediction) "
        f"and {report / 'overlays'}/"
    )
    print(f"  report:    {report / 'report.md'}")
    print(f"  model:     {result.path / 'model.safetensors'}")
    print()
    print("The same on your own folder (images/ + masks/ with matching names):")
    print("  unetkit plan MY_DATA                                   # what it will do, and why")
    print("  unetkit train MY_DATA --out my_run --max-minutes 20    # or --val MY_VAL_DATA")
    print("  unetkit evaluate my_run MY_TEST_DATA --out my_report")
    print("  unetkit predict my_run NEW_IMAGES --out predictions")
    return 0 if dice >= 0.9 else 1
