"""``unetkit train DATA --out RUN``: train a U-Net on a folder of images and masks.

Config resolution, later wins: the preset (``auto`` = the plan of ``unetkit plan``, or ``paper`` /
``tutorial``), ``--config FILE``, the named options (``--val``, ``--max-minutes``...), then any
``--section.field VALUE``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional

from ..config import (
    PRESETS,
    GenerationConfig,
    RestorationConfig,
    TrainConfig,
    apply_overrides,
    dump_config,
    merge_dict,
    parse_override_args,
    preset_config,
    read_config_file,
)
from ..data.io import DataError
from ..losses import LossConfig
from ..training.distributed import add_nproc_option, is_elastic_restart, is_main_process, launch
from ..training.state import has_state

#: ``--task`` words: segmentation, a restoration mode, or generation.
CLI_TASKS = ("segment", "restore", "denoise", "super-resolve", "generate")
#: ``--condition`` words of ``--task generate`` (the config's ``generation.condition``).
CLI_CONDITIONS = ("class", "none", "low-res", "mask")
#: ``--self-supervised`` methods (restoration modes), the default first: Noise2Void, what the flag alone
#: has always meant; Neighbor2Neighbor measured better on the same budget (BENCHMARKS.md, restoration).
SELF_SUPERVISED_METHODS = ("noise2void", "neighbor2neighbor")

#: Fields a resumed run may change (the rest would break the schedule it continues).
RESUMABLE_FIELDS = (
    "budget.epochs",
    "budget.max_minutes",
    "budget.patience",
    "device",
    "threads",
    "data.num_workers",
    "tensorboard",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a U-Net on a dataset folder (images/ + masks/)",
        allow_abbrev=False,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any config field can be set too, e.g. --model.base-channels 32 --optim.lr 1e-4 "
        "(see --print-config for them all).",
    )
    parser.add_argument(
        "data", nargs="?",
        help="training dataset folder (images/ + masks/; restoration: inputs/ + targets/, or images)",
    )
    parser.add_argument("--out", help="run folder to write (default: runs/<data folder name>)")
    val = parser.add_mutually_exclusive_group()
    val.add_argument("--val", help="validation dataset folder")
    val.add_argument("--val-fraction", type=float, help="hold out this fraction of DATA for validation")
    parser.add_argument(
        "--max-minutes", type=float, help="wall-clock budget; ends cleanly with the best model"
    )
    parser.add_argument(
        "--target",
        choices=("semantic", "three-class", "flows", "distance"),
        help="what the network learns: the masks' classes (semantic), or for touching objects background / "
        "interior / border (three-class), the foreground and a flow field towards each object's centre "
        "(flows) or the foreground and the distance to each object's outline (distance); same as "
        "--data.target; default: the plan picks from how crowded the objects are",
    )
    parser.add_argument(
        "--task", choices=CLI_TASKS, default="segment",
        help="what the network learns: segment (masks, default); restore (DATA/inputs -> DATA/targets "
        "pairs); denoise (clean images + --noise, or noisy images with --self-supervised); super-resolve "
        "(clean images, bicubic-downscaled by --scale); generate (a diffusion model: DATA/*.png, or one "
        "subfolder per class; see --condition)",
    )
    parser.add_argument(
        "--condition", choices=CLI_CONDITIONS,
        help="generate: what samples are conditioned on: class (one subfolder per class; the default when "
        "DATA has them), none, low-res (a super-resolution stage of a cascade, with --scale) or mask "
        "(DATA/images + DATA/masks: images for a given label mask)",
    )
    parser.add_argument("--noise", help="denoise: the noise added to clean images, e.g. gaussian:25, "
                        "gaussian:0-55 (blind), poisson:30, poisson-gaussian:30,10 (default gaussian:25)")
    parser.add_argument("--scale", type=int, help="super-resolve: 2, 3 or 4 (default 2); "
                        "generate --condition low-res: the stage's scale (default 4)")
    add_self_supervised_option(parser)
    parser.add_argument("--config", help="config file (JSON or YAML, may be partial)")
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="auto",
        help="starting point: auto (planned from the data, default), paper or tutorial",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN",
        help="continue the run in RUN (or in --out) where it stopped",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    add_nproc_option(parser, "train data-parallel")
    parser.set_defaults(func=run, accepts_overrides=True)


def add_self_supervised_option(parser: argparse.ArgumentParser) -> None:
    """``--self-supervised [METHOD]`` (``unetkit train`` and ``unetkit plan``)."""
    parser.add_argument(
        "--self-supervised", nargs="?", const=SELF_SUPERVISED_METHODS[0], choices=SELF_SUPERVISED_METHODS,
        metavar="METHOD",
        help="denoise from noisy images alone (no clean targets): noise2void (default: blind spots) or "
        "neighbor2neighbor (two neighbour sub-images of each noisy image, one the input and one the "
        "target; about 1.2 dB better in 20 CPU minutes, see BENCHMARKS.md)",
    )


def restoration_options(args: argparse.Namespace) -> Optional[RestorationConfig]:
    """The restoration settings ``--task``, ``--noise``, ``--scale`` and ``--self-supervised`` ask for
    (``None`` for segmentation); raises ``ValueError`` for options that do not fit the task."""
    task = getattr(args, "task", "segment")
    misplaced = [
        name for name, given, allowed in (
            ("--noise", args.noise is not None, task == "denoise" and not args.self_supervised),
            ("--scale", args.scale is not None, task in ("super-resolve", "restore") or (
                task == "generate" and getattr(args, "condition", None) == "low-res")),
            ("--condition", getattr(args, "condition", None) is not None, task == "generate"),
            ("--self-supervised", args.self_supervised, task == "denoise"),
        ) if given and not allowed
    ]
    if misplaced:
        raise ValueError(
            f"{', '.join(misplaced)} does not apply to --task {task}"
            + (" --self-supervised (it learns the noise from the images)" if args.self_supervised else "")
        )
    if task == "segment":
        return None
    if task == "denoise":
        mode = args.self_supervised or "denoise"
        return RestorationConfig(mode=mode, noise=args.noise or RestorationConfig.noise)
    if task == "super-resolve":
        scale = 2 if args.scale is None else args.scale
        if scale < 2:
            raise ValueError(f"--scale must be 2 or more for super-resolution, got {scale}")
        return RestorationConfig(mode="super_resolve", scale=scale)
    return RestorationConfig(mode="pairs", scale=args.scale or 1)


def generation_options(args: argparse.Namespace) -> Optional[GenerationConfig]:
    """The generation settings ``--task generate``, ``--condition`` and ``--scale`` ask for."""
    if getattr(args, "task", "segment") != "generate":
        return None
    condition = args.condition.replace("-", "_") if args.condition else None
    scale = GenerationConfig.scale if args.scale is None else args.scale
    if condition == "low_res" and scale < 2:
        raise ValueError(f"--scale must be 2 or more for a super-resolution stage, got {scale}")
    return GenerationConfig(condition=condition, scale=scale)


def resolve_config(args: argparse.Namespace, overrides: dict[str, str]) -> TrainConfig:
    """The config the options describe (the plan is computed for ``--preset auto``)."""
    # --target or --data.target: the plan depends on it (without either, the plan picks one)
    target = args.target or overrides.get("data.target")
    target = target.replace("-", "_") if target else None
    restoration = restoration_options(args)
    generation = generation_options(args)
    if (restoration or generation) is not None and args.target:
        raise ValueError(f"--target is a segmentation option; it does not apply to --task {args.task}")
    if generation is not None and args.preset != "auto":
        raise ValueError("--preset paper/tutorial describe segmentation U-Nets; --task generate is planned")
    if args.preset == "auto":
        if not args.data:
            raise ValueError("give the training dataset folder: unetkit train DATA --out RUN")
        if generation is not None:
            from ..training.generation_plan import plan_generation

            config = plan_generation(
                args.data, generation, val_dir=args.val, max_minutes=args.max_minutes
            ).config
        elif restoration is not None:
            from ..training.restoration_plan import plan_restoration

            config = plan_restoration(
                args.data, restoration, val_dir=args.val, max_minutes=args.max_minutes
            ).config
        else:
            from ..training.planner import plan_training

            config = plan_training(
                args.data, val_dir=args.val, max_minutes=args.max_minutes, target=target
            ).config
    else:
        config = preset_config(args.preset)
        if restoration is not None:
            config = dataclasses.replace(
                config, task="restoration", restoration=restoration,
                model=dataclasses.replace(config.model, padding="same", residual=True),
                loss=LossConfig(name="l1" if restoration.mode in ("pairs", "super_resolve") else "l2"),
            )
    if args.config:
        try:
            config = merge_dict(config, read_config_file(args.config))
        except ValueError as exc:
            raise ValueError(f"{args.config}: {exc}") from exc
    named = {
        "data.train": args.data,
        "data.val": args.val,
        "data.val_fraction": args.val_fraction,
        "budget.max_minutes": args.max_minutes,
        "data.target": target if args.target else None,
        "out": args.out,
    }
    config = apply_overrides(config, {k: v for k, v in named.items() if v is not None})
    if not args.out and config.out == TrainConfig().out and config.data.train:
        config = apply_overrides(config, {"out": str(Path("runs") / Path(config.data.train).resolve().name)})
    return apply_overrides(config, overrides).validate()


def resume_config(args: argparse.Namespace, overrides: dict[str, str]) -> TrainConfig:
    from ..config import load_config

    run_dir = Path(args.resume if isinstance(args.resume, str) else (args.out or ""))
    if not str(run_dir):
        raise ValueError("--resume needs the run folder: unetkit train --resume RUN")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: {run_dir} is not a run folder of `unetkit train`")
    changed = dict(overrides)
    if args.max_minutes is not None:
        changed["budget.max_minutes"] = args.max_minutes
    frozen = [k for k in changed if k not in RESUMABLE_FIELDS]
    if frozen:
        raise ValueError(
            f"a resumed run keeps its config; only {', '.join(RESUMABLE_FIELDS)} may change "
            f"(not {', '.join(frozen)})"
        )
    config = apply_overrides(load_config(config_path), changed)
    return apply_overrides(config, {"out": str(run_dir)})


def run(args: argparse.Namespace) -> int:
    from ..training import TrainingDiverged, train
    from ..training.distributed import DistributedError

    try:
        if getattr(args, "nproc", None) is not None and not args.print_config:
            return launch(args.argv, args.nproc)
        overrides = parse_override_args(getattr(args, "overrides", []))
        config = resume_config(args, overrides) if args.resume else resolve_config(args, overrides)
        if args.print_config:
            sys.stdout.write(dump_config(config, "yaml"))
            return 0
        # Restarted by `torchrun --max-restarts K`: continue from the last committed checkpoint.
        resume = bool(args.resume) or (is_elastic_restart() and has_state(Path(config.out)))
        result = train(config, resume=resume, progress_bar=not args.no_progress)
    except (TrainingDiverged, DistributedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (DataError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.status == "interrupted":
        return 130
    if not is_main_process():
        return 0
    print(
        f"best model: {result.path}/model.safetensors; curves: {result.path}/curves.png; "
        f"samples: {result.path}/samples/"
    )
    print(f"next: unetkit evaluate {result.path} TEST_DATA --out {result.path}/report")
    return 0
