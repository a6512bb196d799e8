"""Forward and forward+backward time of the U-Net presets next to MONAI's BasicUNet.

Run by hand (needs the ``bench`` extra, i.e. MONAI):

    .venv/bin/python benchmarks/bench_models.py [--repeats 5]

Each pair of networks is timed in the same process, alternating one repeat of each, so
that load from other processes on a shared machine hits both alike; the table reports the
median and the ratio unetkit / MONAI (below 1.0 = unetkit faster).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch
from monai.networks.nets import BasicUNet
from torch import nn

from unetkit.models import UNet


def forward_time(model: nn.Module, x: torch.Tensor) -> float:
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        model(x)
    return time.perf_counter() - start


def train_step_time(model: nn.Module, x: torch.Tensor) -> float:
    model.train()
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model(x).float().mean().backward()
    return time.perf_counter() - start


def monai_like(in_channels: int, out_channels: int, base: int, dropout: float = 0.0) -> nn.Module:
    """BasicUNet with the U-Net's channels (base..16*base), ReLU, no norm, transposed up-conv."""
    features = (base, 2 * base, 4 * base, 8 * base, 16 * base, base)
    return BasicUNet(
        spatial_dims=2, in_channels=in_channels, out_channels=out_channels, features=features,
        act="relu", norm=None, dropout=dropout, upsample="deconv",
    )


def compare(
    name: str,
    ours: nn.Module,
    ours_input: torch.Tensor,
    theirs: nn.Module,
    their_input: torch.Tensor,
    repeats: int,
) -> list[str]:
    rows = []
    timers: list[tuple[str, Callable[[nn.Module, torch.Tensor], float]]] = [
        ("forward", forward_time), ("forward+backward", train_step_time)
    ]
    for label, timer in timers:
        timer(ours, ours_input), timer(theirs, their_input)  # warm-up
        a, b = [], []
        for _ in range(repeats):
            a.append(timer(ours, ours_input))
            b.append(timer(theirs, their_input))
        ma, mb = statistics.median(a), statistics.median(b)
        rows.append(
            f"| {name} | {label} | {tuple(ours_input.shape)} | {ma:.3f} | {mb:.3f} | {ma / mb:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}")
    print("| work | pass | input | unetkit s | MONAI BasicUNet s | ratio |")
    print("|---|---|---|---|---|---|")
    paper = UNet.paper()
    compare(
        "UNet.paper() (valid) vs BasicUNet 64..1024", paper, torch.randn(1, 1, 572, 572),
        monai_like(1, 2, 64), torch.randn(1, 1, 572, 572), args.repeats,
    )
    same = UNet(1, 2, base_channels=64, padding="same")
    compare(
        "same-padding UNet 64..1024 vs BasicUNet 64..1024", same, torch.randn(1, 1, 576, 576),
        monai_like(1, 2, 64), torch.randn(1, 1, 576, 576), args.repeats,
    )
    batch = torch.rand(16, 3, 128, 128)
    compare(
        "UNet.tutorial() vs BasicUNet 16..256 (dropout 0.1)", UNet.tutorial(), batch,
        monai_like(3, 1, 16, dropout=0.1), batch, args.repeats,
    )


if __name__ == "__main__":
    main()
