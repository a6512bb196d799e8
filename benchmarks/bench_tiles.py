"""Which tile, batch, backend and precision predict fastest on this machine: the network alone.

For each network (the tutorial same-padding net, the paper's valid-padding net) and each tile edge,
one batch of random tiles goes through the network (PyTorch channels-last: float32, bfloat16 weights as
unetkit predicts, and float32 weights under bfloat16 autocast; ONNX Runtime in float32), best of
``--repeats`` after a warm-up. Two speeds:
``input Mpx/s`` (tile pixels per second) and ``useful Mpx/s``: the output pixels a tile adds to a big
image (the stride squared: tile - overlap for the same-padding net, the output tile rounded to the
pooling grid for the paper net) per second, which is what a prediction of a big image gets.

    python benchmarks/bench_tiles.py --models tutorial paper --repeats 3
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

from unetkit.export import ExportedModel, _onnx_session, build_contract, onnx_bytes
from unetkit.inference.low_precision import LowPrecisionNetwork
from unetkit.inference.tiling import grid_step
from unetkit.models import UNet

TILES = {"tutorial": [256, 384, 512, 768, 1024], "paper": [380, 572, 764, 1020]}


def onnx_runner(model: torch.nn.Module):
    """The network as unetkit runs it in ONNX Runtime (exported in memory, the predictor's session)."""
    contract = build_contract(model)
    return ExportedModel("onnxruntime", "bench", contract, _onnx_session(onnx_bytes(model, contract)))


def torch_runner(model: torch.nn.Module, precision: str):
    """PyTorch, channels-last: float32; ``bf16`` as unetkit predicts (a copy with bfloat16 weights);
    ``bf16autocast``: the float32 network under bfloat16 autocast."""
    network = model
    if precision == "bf16":
        network = LowPrecisionNetwork(model, torch.bfloat16, torch.channels_last)

    def run(batch: torch.Tensor):
        if precision == "bf16autocast":
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return network(batch.contiguous(memory_format=torch.channels_last))
        with torch.inference_mode():
            return network(batch.contiguous(memory_format=torch.channels_last))

    return run


def best_time(fn, batch, repeats: int) -> float:
    fn(batch)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn(batch)
        best = min(best, time.perf_counter() - start)
    return best


def useful_edge(model: torch.nn.Module, tile: int, overlap: float) -> int:
    if model.context() > 0:
        out = model.output_size(tile)
        step = grid_step(model)
        return out // step * step
    return int(tile * (1 - overlap))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tutorial", "paper"], choices=list(TILES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--backends", nargs="+",
                        default=["torch-fp32", "torch-bf16", "torch-bf16autocast", "onnxruntime-fp32"])
    args = parser.parse_args()
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = (UNet.tutorial() if name == "tutorial" else UNet.paper()).eval()
        for tile in TILES[name]:
            valid = model.nearest_valid_input_sizes(tile)[0]
            useful = useful_edge(model, valid, args.overlap)
            for batch_size in args.batches:
                if name == "paper" and batch_size > 1 and tile > 572:
                    continue
                batch = torch.from_numpy(
                    np.random.default_rng(0).random((batch_size, model.in_channels, valid, valid),
                                                    dtype=np.float32)
                )
                for backend in args.backends:
                    kind, precision = backend.split("-")
                    if kind == "onnxruntime":
                        run = onnx_runner(model)
                    else:
                        run = torch_runner(model, precision)
                    seconds = best_time(run, batch, args.repeats)
                    rows.append((name, kind, precision, valid, useful, batch_size, seconds,
                                 batch_size * valid**2 / seconds / 1e6,
                                 batch_size * useful**2 / seconds / 1e6))
                    print(rows[-1], file=sys.stderr, flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}\n")
    print("| network | backend | precision | tile in | useful edge | batch | s / batch | input Mpx/s "
          "| useful Mpx/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, kind, precision, tile, useful, batch, seconds, inp, use in rows:
        print(f"| {name} | {kind} | {precision} | {tile} | {useful} | {batch} | {seconds:.3f} | {inp:.3f} "
              f"| {use:.3f} |")


if __name__ == "__main__":
    main()
