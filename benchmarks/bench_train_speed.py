"""Training-step throughput on the CPU: DataLoader workers x torch threads, on ISBI 2012 patches.

The planned ISBI network (same padding, depth 4, width 16, batch norm, batch 4 x 256 px, default
augmentation) trained by unetkit's :class:`~unetkit.training.Trainer` machinery for a fixed number of
batches per setting; the first batch (start-up, worker spawn) is not timed.

    flock /tmp/unetkit-heavy.lock python benchmarks/bench_train_speed.py --batches 12
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

from unetkit.config import TrainConfig, apply_overrides
from unetkit.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isbi2012"
PLAN = {
    "model.depth": 4, "model.base_channels": 16, "model.padding": "same", "model.norm": "batch",
    "model.num_classes": 1, "data.patch_size": 256, "data.batch_size": 4, "data.val_fraction": 0.2,
    "loss.name": "ce",
}


def time_setting(workers: int, threads: int, batches: int, out: Path) -> float:
    """Batches per second of the training loop with ``workers`` loader processes and ``threads``."""
    config = apply_overrides(TrainConfig(), {
        **PLAN, "data.train": str(DATA), "data.num_workers": workers, "threads": threads,
        "data.patches_per_epoch": 4 * (batches + 1), "out": str(out),
    })
    trainer = Trainer(config, progress_bar=False, log=lambda _: None)
    trainer._setup()
    loader = trainer._loader(0)
    it = iter(loader)
    trainer._train_step(next(it), update=True)
    start = time.perf_counter()
    for batch in itertools.islice(it, batches):
        trainer._train_step(batch, update=True)
    return batches / (time.perf_counter() - start)


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--work", default="/tmp/unetkit-bench/speed")
    args = parser.parse_args()
    rows = []
    for i, (workers, threads) in enumerate([(0, 2), (1, 2), (2, 2), (0, 1), (1, 1)]):
        rate = time_setting(workers, threads, args.batches, Path(args.work) / f"run{i}")
        rows.append((workers, threads, rate))
        print(f"workers {workers} threads {threads}: {rate:.3f} batches/s", flush=True)
    base = rows[0][2]
    print("\n| DataLoader workers | torch threads | batches/s (4 x 256 px) | vs workers 0, threads 2 |")
    print("|---|---|---|---|")
    for workers, threads, rate in rows:
        print(f"| {workers} | {threads} | {rate:.3f} | {rate / base:.2f}x |")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads available")
    return 0


if __name__ == "__main__":
    sys.exit(main())
