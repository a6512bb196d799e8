"""``unetkit export RUN --format onnx|torchscript|bioimageio [--out FILE]``: files for pipelines without
unetkit, and bioimage.io model packages (:mod:`unetkit.bioimageio_package`)."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..export import FORMATS, export_run, sidecar_path

BIOIMAGEIO = "bioimageio"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX, TorchScript or a bioimage.io package (or a generation run's "
             "denoiser)",
        description=(
            "Export the network of a RUN folder (input: the normalised float tensor (N, C, *S), output: "
            "logits, or for a restoration run the restored image on the normalised scale) with dynamic "
            "batch and spatial axes. The pre/post-processing contract (task, normalisation and its inverse, "
            "channel order, valid sizes, activation, classes, super-resolution scale) goes into the file's "
            "metadata and into FILE.json beside it. A generation run exports its denoiser: inputs noisy, "
            "timestep and the conditions it has (class_label, condition_vector, condition_image, "
            "noise_level), output prediction (eps or v); its contract describes the schedule, sampling and "
            "guidance. --format bioimageio writes a bioimage.io model package (rdf.yaml, PyTorch, "
            "TorchScript and ONNX weights, test data, cover, README) for deepImageJ / Fiji, ilastik and "
            "QuPath."
        ),
    )
    parser.add_argument("run", help="RUN folder written by `unetkit train` (model.json + model.safetensors)")
    parser.add_argument("--format", choices=FORMATS + (BIOIMAGEIO,), default="onnx",
                        help="file format (default: onnx); bioimageio: a bioimage.io model package (zip) for "
                             "deepImageJ / Fiji, ilastik, QuPath (needs the bioimageio extra)")
    parser.add_argument(
        "--out", default=None,
        help="output file (default: RUN/model.onnx, RUN/model.torchscript.pt or RUN/model.bioimageio.zip)",
    )
    package = parser.add_argument_group("bioimage.io package fields (--format bioimageio)")
    package.add_argument("--name", help="model name (default: made from the task and the RUN folder's name)")
    package.add_argument("--description", help="one-paragraph description (default: made from the run)")
    package.add_argument("--author", action="append", default=[], metavar="NAME",
                         help="an author of the model; repeat for several (default: 'unknown', warned)")
    package.add_argument("--license", help="SPDX licence id of the model (default: MIT)")
    package.add_argument("--cite", action="append", default=[], metavar="TEXT=DOI_OR_URL",
                         help="a reference to cite besides the U-Net paper (Ronneberger et al. 2015); repeat")
    package.add_argument("--tag", action="append", default=[], help="an extra search tag; repeat for several")
    package.add_argument("--sample", metavar="IMAGE",
                         help="image to cut the package's test input from (default: the run's first training "
                              "image if it is still there, else a synthetic cells image)")
    parser.set_defaults(func=run)


def export_package(args: argparse.Namespace) -> int:
    """``--format bioimageio``: write the package; print each limitation of the format as a warning."""
    from ..bioimageio_package import BioimageioExportWarning, Citation, PackageOptions, export_bioimageio_run

    try:
        options = PackageOptions(
            name=args.name, description=args.description, authors=args.author, license=args.license or "MIT",
            cite=[Citation.parse(c) for c in args.cite], tags=args.tag, sample=args.sample,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BioimageioExportWarning)
            out = export_bioimageio_run(args.run, args.out, options)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in caught:
        if issubclass(warning.category, BioimageioExportWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
    print(f"wrote {out} (bioimage.io model package; its README.md says what it does not express)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.format == BIOIMAGEIO:
        return export_package(args)
    given = [f"--{name}" for name in ("name", "description", "author", "license", "cite", "tag", "sample")
             if getattr(args, name)]
    if given:
        print(f"error: {', '.join(given)} apply to --format {BIOIMAGEIO} only", file=sys.stderr)
        return 2
    try:
        out = export_run(args.run, args.format, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0
