"""``unetkit evaluate RUN DATA --out REPORT``: score a trained run on a labelled dataset folder.

Writes ``per_image.csv``, ``summary.json``, ``report.md`` (metric table, worst images with their
image | truth | prediction overlays) and ``masks/`` (the predictions, in the training masks' encoding).
A restoration run is scored by PSNR and SSIM on ``inputs/`` + ``targets/`` pairs, or on clean images
degraded as in training (``--noise`` to choose another noise); the report shows input | output |
target crops and ``restored/`` holds the outputs.

An image or mask that cannot be read or scored is named with its reason (in ``summary.json`` as
``failed`` and in the report), the others are scored, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.io import DataError
from ..instances import INSTANCE_METHODS
from .inference_options import add_precision_option

SHOWN = (
    "accuracy", "real_accuracy", "frechet", "frechet_floor", "nn_distance", "nn_distance_real", "copies",
    "psnr_bicubic", "consistency_psnr", "dice_generated", "dice_real", "seconds_per_sample",
    "psnr", "ssim", "psnr_input", "val_loss",
    "dice", "iou", "mean_iou", "precision", "recall", "pixel_error", "rand_error", "hd95",
    "ap_50", "dsb_score", "f1_50", "aji", "panoptic_quality",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a trained run on a labelled dataset folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="run folder written by `unetkit train`")
    parser.add_argument("data", help="dataset folder with images/ and masks/ (restoration: inputs/ + "
                        "targets/, or clean images)")
    parser.add_argument("--out", help="report folder (default: RUN/eval-<data folder name>)")
    parser.add_argument("--tta", action="store_true", help="average over flips and 90-degree rotations")
    add_precision_option(parser)
    parser.add_argument("--no-masks", action="store_true",
                        help="do not write the predicted masks (restoration: the restored images)")
    parser.add_argument("--noise", help="denoising runs on clean images: the noise to add instead of the "
                        "run's own, e.g. gaussian:15 (seeded per image)")
    parser.add_argument("--worst", type=int, default=4, help="worst images shown with overlays (default 4)")
    parser.add_argument("--metric", help="metric that ranks the worst images (default: the run's monitor)")
    parser.add_argument("--instances", action="store_true",
                        help="also score objects (AP@0.5, DSB score, F1@0.5, AJI, PQ) against instances/")
    parser.add_argument("--instance-method", choices=INSTANCE_METHODS,
                        help="how objects are separated (default: the run's own route, as in predict "
                             "--instances: three_class, flows, distance or membrane for such runs, else "
                             "watershed)")
    gen = parser.add_argument_group("generation runs (diffusion)")
    gen.add_argument("--n", type=int, help="samples to score (default: as many as held-out real images)")
    gen.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    gen.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="default ddim")
    gen.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance (default 3)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    gen.add_argument("--segmenter", metavar="RUN",
                     help="mask-to-image runs: a segmentation run that segments the generated images")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.evaluation import evaluate_run

    out = Path(args.out) if args.out else Path(args.run) / f"eval-{Path(args.data).resolve().name}"
    try:
        summary = evaluate_run(
            args.run,
            args.data,
            out,
            tta=args.tta,
            precision=args.precision,
            save_masks=not args.no_masks,
            worst=args.worst,
            metric=args.metric,
            progress=True,
            instances=args.instances,
            instance_method=args.instance_method,
            noise=args.noise,
            generation=dict(n=args.n, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                            seed=args.seed, segmenter=args.segmenter),
        )
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "num_images" in summary:
        print(f"{summary['num_images']} images scored:")
    else:
        print(f"{summary['n_samples']} samples scored against {summary['n_held_out']} held-out real images:")
    for key in SHOWN:
        if key in summary:
            print(f"  {key:12s} {summary[key]:.4f}")
    if "global_iou_per_class" in summary and len(summary["global_iou_per_class"]) > 2:
        print(f"  mean IoU over the dataset {summary['global_iou']:.4f}")
    per_image = f"  per image: {out / 'per_image.csv'}" if (out / "per_image.csv").is_file() else ""
    print(f"report: {out / 'report.md'}{per_image}  summary: {out / 'summary.json'}")
    for failure in summary.get("failed", []):
        print(f"failed: {failure}")
    return 1 if summary.get("failed") else 0
