"""``unetkit demo``: the main job on the embedded default."""

from __future__ import annotations

import argparse
import time

import torch

from ..models import UNet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the built-in demo")
    parser.add_argument("--out", default="demo_run", help="output folder (default: demo_run)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = UNet.paper().eval()
    size = 572
    image = torch.rand(1, model.in_channels, size, size)
    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(image)
    elapsed = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())
    print(f"UNet.paper(): {n_params:,} parameters, context {model.context()} px per side")
    print(f"input  {tuple(image.shape)}")
    print(f"logits {tuple(logits.shape)}  ({elapsed:.2f} s on the CPU)")
    return 0
