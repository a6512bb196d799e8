"""Training-step throughput on the CPU, on ISBI 2012 patches.

1. One optimiser step of the planned ISBI network (same padding, depth 4, width 16, batch norm,
   batch 4 x 256 px) on a fixed batch: memory format (contiguous / channels-last) x precision
   (float32 / bfloat16 autocast). This is why the trainer uses channels-last for 2D and
   ``precision auto`` (bfloat16 on CPUs with AVX512-BF16 or AMX).
2. unetkit's :class:`~unetkit.training.Trainer` loop with real augmented patches: precision x
   DataLoader workers x torch threads, for a fixed number of batches per setting; the first batch
   (start-up, worker spawn) is not timed.

    flock /tmp/unetkit-heavy.lock python benchmarks/bench_train_speed.py --batches 12
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

from unetkit.config import TrainConfig, apply_overrides
from unetkit.models import UNet
from unetkit.precision import mixed_precision_dtype
from unetkit.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isbi2012"
PLAN = {
    "model.depth": 4, "model.base_channels": 16, "model.padding": "same", "model.norm": "batch",
    "model.num_classes": 1, "data.patch_size": 256, "data.batch_size": 4, "data.val_fraction": 0.2,
    "loss.name": "ce",
}


def time_step(channels_last: bool, bf16: bool, repeats: int = 6) -> float:
    """Median seconds of one optimiser step (forward, backward, Adam) on a fixed random batch."""
    torch.manual_seed(0)
    model = UNet(in_channels=1, num_classes=1, depth=4, base_channels=16, padding="same", norm="batch")
    x = torch.randn(4, 1, 256, 256)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters())
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def time_setting(precision: str, workers: int, threads: int, batches: int, out: Path) -> float:
    """Batches per second of the training loop with ``workers`` loader processes and ``threads``."""
    config = apply_overrides(TrainConfig(), {
        **PLAN, "data.train": str(DATA), "data.num_workers": workers, "threads": threads,
        "data.patches_per_epoch": 4 * (batches + 1), "out": str(out), "precision": precision,
    })
    trainer = Trainer(config, progress_bar=False, log=lambda _: None)
    trainer._setup()
    return batches_per_second(trainer, batches)


def batches_per_second(trainer: Trainer, batches: int, epoch: int = 0) -> float:
    """Batches per second of ``trainer``'s loop over ``batches`` batches of epoch ``epoch``, after one
    untimed batch (caches, first allocations, worker start-up)."""
    it = iter(trainer._loader(epoch))
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
    native = mixed_precision_dtype(torch.device("cpu"), "auto") is not None
    print(f"native bfloat16 on this CPU (AVX512-BF16 or AMX): {native}", flush=True)
    steps = []
    for channels_last, bf16 in itertools.product((False, True), (False, True)):
        seconds = time_step(channels_last, bf16)
        steps.append((channels_last, bf16, seconds))
        print(f"channels_last {channels_last} bf16 {bf16}: {seconds:.3f} s/step", flush=True)
    print("\n| memory format | precision | s per step (4 x 256 px) | vs contiguous float32 |")
    print("|---|---|---|---|")
    for channels_last, bf16, seconds in steps:
        print(f"| {'channels-last' if channels_last else 'contiguous'} | {'bfloat16' if bf16 else 'float32'} "
              f"| {seconds:.3f} | {steps[0][2] / seconds:.2f}x faster |")

    rows = []
    settings = [
        ("fp32", 0, 2), ("auto", 0, 2), ("auto", 1, 2), ("auto", 2, 2), ("auto", 0, 1), ("auto", 1, 1)
    ]
    for i, (precision, workers, threads) in enumerate(settings):
        rate = time_setting(precision, workers, threads, args.batches, Path(args.work) / f"run{i}")
        rows.append((precision, workers, threads, rate))
        print(f"precision {precision} workers {workers} threads {threads}: {rate:.3f} batches/s", flush=True)
    base = rows[0][3]
    print("\n| precision | DataLoader workers | torch threads | batches/s (4 x 256 px) "
          "| vs fp32, 0 workers, 2 threads |")
    print("|---|---|---|---|---|")
    for precision, workers, threads, rate in rows:
        print(f"| {precision} | {workers} | {threads} | {rate:.3f} | {rate / base:.2f}x |")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads available")
    return 0


if __name__ == "__main__":
    sys.exit(main())
