"""``unetkit generate RUN [RUN ...] --out DIR``: draw images from diffusion runs.

One RUN: ``--n`` samples (class-conditional runs: the classes in turn, or all of ``--class``);
an image-conditioned run takes ``--condition FILES`` (low-resolution images for a super-resolution
stage, label masks for a mask-to-image run) and draws one sample per file. Several RUNs form a
cascade: the first generates, each next one (a super-resolution stage) raises the resolution of the
stage before. Each sample is written as ``DIR/sample_NNNN.png`` (TIFF for 16-bit or float data; named
after the condition file when there is one), with ``grid.png`` of them all and ``generate.json``
(the settings). Everything is checked before the first sample is drawn; files are written whole. A
condition file that cannot be read or drawn from is named at the end (exit code 1), the others are drawn.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.io import DataError, failure_message, list_images


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="draw images from diffusion runs (trained with --task generate)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s); several = a cascade")
    parser.add_argument("--out", required=True, help="folder to write the samples to")
    parser.add_argument("--n", type=int, help="samples to draw (default 64; with --condition: one per file)")
    parser.add_argument("--class", dest="class_name", help="class-conditional runs: draw only this class")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    parser.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim",
                        help="ddim (deterministic with --eta 0, default) or ddpm (ancestral)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0 deterministic, 1 like DDPM)")
    parser.add_argument("--guidance", type=float, default=3.0,
                        help="classifier-free guidance: 0 unconditional, 1 conditional, more = stronger "
                        "(default 3; class-conditional runs only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("--condition", nargs="+", metavar="FILE",
                        help="condition images (files or folders): low-resolution images, or label masks")
    parser.add_argument("--condition-noise", type=float, default=0.0,
                        help="super-resolution stages: the conditioning-augmentation level (default 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples drawn at once (default 64)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.set_defaults(func=run)


def condition_files(names: list[str]) -> list[Path]:
    """The image files named, folders expanded; raises :class:`DataError` for a missing one."""
    files: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise DataError(f"{path} holds no images to condition on")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path} not found: give condition image files or folders")
    return files


def _sample_path(out: Path, name: str, dtype: np.dtype) -> Path:
    return out / f"{name}{'.png' if dtype == np.uint8 else '.tif'}"


def run(args: argparse.Namespace) -> int:
    from ..inference.generate import DiffusionSampler, check_cascade, read_low_res, read_mask, save_grid
    from ..inference.restore import save_restored
    from ..utils.atomic import atomic_write_json

    try:
        stages = [DiffusionSampler.from_run(path, device=args.device) for path in args.runs]
        check_cascade(stages, args.runs)
        first = stages[0]
        if args.class_name is not None:
            first.class_index(args.class_name)
        if args.steps < 1 or (args.n is not None and args.n < 1) or args.batch_size < 1:
            raise ValueError("--steps, --n and --batch-size must be at least 1")
        files = condition_files(args.condition) if args.condition else []
        if first.condition in ("low_res", "mask") and not files:
            raise ValueError(f"{args.runs[0]} is {first.condition}-conditioned: give --condition FILES")
        if files and first.condition not in ("low_res", "mask"):
            raise ValueError(f"{args.runs[0]} is not image-conditioned; --condition does not apply")
        read = read_low_res if first.condition == "low_res" else read_mask
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures: list[str] = []
    conditions: dict[Path, torch.Tensor] = {}
    for path in files:
        try:
            if any(f.stem == path.stem for f in conditions):
                raise DataError(f"{path}: another condition file has the same name {path.stem!r}; "
                                "generate from it into another --out")
            conditions[path] = read(first, path)
        except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the batch
            failures.append(failure_message(path, exc))
    if files and not conditions:
        for failure in failures:
            print(f"error: {failure}", file=sys.stderr)
        return 2
    out = Path(args.out)
    options: dict[str, Any] = dict(
        steps=args.steps, sampler=args.sampler, eta=args.eta, guidance=args.guidance, seed=args.seed,
        batch_size=args.batch_size,
    )
    started = time.perf_counter()
    if conditions:
        drawn: dict[Path, torch.Tensor] = {}
        for path, condition in conditions.items():
            try:
                drawn[path] = _cascade(stages, 1, condition=condition, options=options,
                                       noise=args.condition_noise)[0]
            except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the batch
                failures.append(failure_message(path, exc))
        names, samples = [f.stem for f in drawn], list(drawn.values())
    else:
        n = args.n or 64
        labels = first.labels(n, args.class_name)
        samples = list(_cascade(stages, n, labels=labels, options=options, noise=args.condition_noise))
        names = [f"sample_{i:04d}" for i in range(n)]
    seconds = time.perf_counter() - started
    last = stages[-1]
    written = []
    for name, s in zip(names, samples):
        path = _sample_path(out, name, last.dtype)
        try:
            written.append(save_restored(path, last.to_data(s[None])[0]))
        except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the batch
            failures.append(failure_message(path, exc))
    if all(s.ndim == 3 for s in samples) and len({tuple(s.shape) for s in samples}) == 1:
        save_grid(out / "grid.png", [s.numpy() for s in samples], columns=min(8, len(samples)))
    atomic_write_json(out / "generate.json", {
        "runs": [str(r) for r in args.runs], "n": len(samples), "class": args.class_name,
        "condition": [str(f) for f in files], "condition_noise": args.condition_noise,
        "seconds": round(seconds, 3), "seconds_per_sample": round(seconds / max(len(samples), 1), 4),
        **options,
    })
    print(f"{len(written)} samples in {out} ({seconds:.1f} s, {seconds / max(len(written), 1):.3f} s each)")
    for failure in failures:
        print(f"failed: {failure}")
    return 1 if failures else 0


def _cascade(stages: list, n: int, *, options: dict[str, Any], noise: float, **first: Any) -> torch.Tensor:
    from ..inference.generate import generate_cascade

    return generate_cascade(stages, n, condition_noise=noise, **first, **options)[-1]
