"""Options every command that predicts shares: the runtime, the arithmetic and the memory bound."""

from __future__ import annotations

import argparse
import re

from ..export import BACKEND_CHOICES
from ..precision import INFERENCE_PRECISIONS

UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}


def memory_size(text: str) -> int:
    """``"1.5GB"``, ``"800MB"``, ``"800m"`` or a number of bytes -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in UNITS or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size: give e.g. 1.5GB, 800MB or bytes")
    return int(float(match.group(1)) * UNITS[unit])


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", choices=INFERENCE_PRECISIONS,
        help="arithmetic of the network: auto (default; a run trained with --precision fp32/bf16 keeps "
             "it) picks bf16 where the hardware computes it, fp16 on GPUs without bf16, else fp32",
    )


def add_inference_options(parser: argparse.ArgumentParser, *, memory: bool = True) -> None:
    """``--backend``, ``--precision`` and (``memory``) ``--max-memory``."""
    parser.add_argument(
        "--backend", choices=BACKEND_CHOICES, default="auto",
        help="runtime: auto (default: the fastest of torch and ONNX Runtime on this machine, measured "
             "once and cached), torch, or the network exported to onnxruntime / torchscript (CPU)",
    )
    add_precision_option(parser)
    parser.add_argument(
        "--compile", action="store_true",
        help="PyTorch: compile the network with torch.compile; the first tiles wait for it (10-40 s on "
             "2 CPU cores), then 1.3-1.7x faster there: for big images and many files",
    )
    if memory:
        parser.add_argument(
            "--max-memory", type=memory_size, metavar="SIZE",
            help="most memory a prediction may hold for tiles, activations and buffers (e.g. 1GB; "
                 "default: 1 GB or a quarter of what is free, whichever is less)",
        )
