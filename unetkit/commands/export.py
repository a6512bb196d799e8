"""``unetkit export RUN --format onnx|torchscript [--out FILE]``: files for pipelines without unetkit."""

from __future__ import annotations

import argparse
import sys

from ..export import FORMATS, export_run, sidecar_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript",
        description=(
            "Export the network of a RUN folder (input: the normalised float tensor (N, C, *S), output: "
            "logits, or for a restoration run the restored image on the normalised scale) with dynamic "
            "batch and spatial axes. The pre/post-processing contract (task, normalisation and its inverse, "
            "channel order, valid sizes, activation, classes, super-resolution scale) goes into the file's "
            "metadata and into FILE.json beside it."
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
