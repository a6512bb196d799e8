"""Forward time of the paper and tutorial U-Nets: PyTorch eager vs ONNX Runtime vs TorchScript.

Run by hand (needs the ``deploy`` extra), one heavy job at a time:

    flock /tmp/unetkit-heavy.lock .venv/bin/python benchmarks/bench_backends.py [--repeats 7]

Every backend runs the same network (random weights: the speed does not depend on them) on
the same input in one process, with the same number of threads, one repeat of each in turn so
that load from other processes hits all alike. The table gives the median time per forward
pass and the ratio to PyTorch (below 1.0 = faster than PyTorch), then the whole
``Predictor.predict`` of a larger image through each backend.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from unetkit.export import export_model, load_backend
from unetkit.inference import Predictor
from unetkit.models import UNet

BACKENDS = ("torch", "onnxruntime", "torchscript")
WARMUP = 3
FILES = {"onnxruntime": ("onnx", "model.onnx"), "torchscript": ("torchscript", "model.torchscript.pt")}


def time_call(fn, x: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn(x)
    return time.perf_counter() - start


def build_backends(model: torch.nn.Module, folder: Path) -> tuple[dict, dict]:
    """Backend name -> callable, and the export time and file size of each exported format."""
    runners: dict = {"torch": model}
    exports = {}
    for kind, (fmt, name) in FILES.items():
        start = time.perf_counter()
        path = export_model(model, folder / name, fmt)
        exports[kind] = (time.perf_counter() - start, path.stat().st_size / 2**20)
        runners[kind] = load_backend(kind, path)
    return runners, exports


def bench_network(
    label: str, model: torch.nn.Module, x: torch.Tensor, repeats: int, folder: Path
) -> list[str]:
    runners, exports = build_backends(model.eval(), folder)
    with torch.inference_mode():
        reference = model(x)
    for kind in FILES:  # same answer first, then speed
        diff = (runners[kind](x) - reference).abs().max().item()
        assert diff < 1e-3, f"{kind} differs from PyTorch by {diff}"
    times: dict[str, list[float]] = {k: [] for k in BACKENDS}
    for kind in BACKENDS:  # warm-up: TorchScript's profiling executor specialises over the first calls
        for _ in range(WARMUP):
            time_call(runners[kind], x)
    for _ in range(repeats):
        for kind in BACKENDS:
            times[kind].append(time_call(runners[kind], x))
    base = statistics.median(times["torch"])
    rows = []
    for kind in BACKENDS:
        median = statistics.median(times[kind])
        export = f"{exports[kind][0]:.1f} s, {exports[kind][1]:.1f} MB" if kind in exports else "-"
        rows.append(
            f"| {label} | {tuple(x.shape)} | {kind} | {median * 1000:.0f} | {min(times[kind]) * 1000:.0f} "
            f"| {median / base:.2f} | {export} |"
        )
    return rows


def bench_predictor(
    label: str, run_model: torch.nn.Module, image: np.ndarray, repeats: int, folder: Path
) -> list[str]:
    runners, _ = build_backends(run_model.eval(), folder)
    predictors = {k: Predictor(runners[k], device="cpu") for k in BACKENDS}
    reference = predictors["torch"].predict(image)
    times: dict[str, list[float]] = {k: [] for k in BACKENDS}
    agree = {}
    for kind in BACKENDS:  # also the warm-up
        agree[kind] = float((predictors[kind].predict(image) == reference).mean())
        predictors[kind].predict(image)
    for _ in range(repeats):
        for kind in BACKENDS:
            start = time.perf_counter()
            predictors[kind].predict(image)
            times[kind].append(time.perf_counter() - start)
    base = statistics.median(times["torch"])
    return [
        f"| {label} | {image.shape} | {kind} | {statistics.median(times[kind]) * 1000:.0f} "
        f"| {statistics.median(times[kind]) / base:.2f} | {agree[kind] * 100:.3f} % |"
        for kind in BACKENDS
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    onnxruntime.set_default_logger_severity(3)
    print(f"# backends: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"python {platform.python_version()}, {args.threads} threads, {args.repeats} repeats\n")
    torch.manual_seed(0)
    paper, tutorial = UNet.paper(), UNet.tutorial()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("| network | input | backend | median ms | min ms | time / torch | export (time, size) |")
        print("|---|---|---|---:|---:|---:|---|")
        rows = []
        for label, model, shape in (
            ("paper (31.0 M params)", paper, (1, 1, 572, 572)),
            ("tutorial (1.9 M params)", tutorial, (1, 3, 128, 128)),
            ("tutorial (1.9 M params)", tutorial, (8, 3, 256, 256)),
        ):
            rows += bench_network(label, model, torch.rand(shape), args.repeats, folder)
        print("\n".join(rows))
        sys.stdout.flush()
        print("\nWhole `Predictor.predict` (tiling, blending, activation), same image, each backend:\n")
        print("| network | image | backend | median ms | time / torch | same labels as torch |")
        print("|---|---|---|---:|---:|---:|")
        rng = np.random.default_rng(0)
        paper_image = rng.random((1, 388, 388), dtype=np.float32)  # one 572 x 572 tile
        tutorial_image = rng.random((3, 1024, 1024), dtype=np.float32)
        rows = bench_predictor("paper", paper, paper_image, 3, folder)
        rows += bench_predictor("tutorial", tutorial, tutorial_image, args.repeats, folder)
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
