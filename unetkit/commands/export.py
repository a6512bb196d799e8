"""``unetkit export RUN --format onnx|torchscript [--out FILE]``: files for pipelines without unetkit."""

from __future__ import annotations

import argparse
import sys

from ..export import FORMATS, export_run, sidecar_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained model (or a generation run's denoiser) to ONNX or TorchScript",
        description=(
            "Export the network of a RUN folder (input: the normalised float tensor (N, C, *S), output: "
            "logits, or for a restoration run the restored image on the normalised scale) with dynamic "
            "batch and spatial axes. The pre/post-processing contract (task, normalisation and its inverse, "
            "channel order, valid sizes, activation, classes, super-resolution scale) goes into the file's "
            "metadata and into FILE.json beside it. A generation run exports its denoiser: inputs noisy, "
            "timestep and the conditions it has (class_label, condition_vector, condition_image, "
            "noise_level), output prediction (eps or v); its contract describes the schedule, sampling and "
            "guidance."
        ),
    )
    parser.add_argument("run", help="RUN folder written by `unetkit train` (model.json + model.safetensors)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="file format (default: onnx)")
    parser.add_argument(
        "--out", default=None, help="output file (default: RUN/model.onnx or RUN/model.torchscript.pt)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        out = export_run(args.run, args.format, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0
