"""``unetkit train DATA --out RUN``: train a U-Net on a folder of images and masks.

Config resolution, later wins: the preset (``auto`` = the plan of ``unetkit plan``, or ``paper`` /
``tutorial``), ``--config FILE``, the named options (``--val``, ``--max-minutes``...), then any
``--section.field VALUE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import (
    PRESETS,
    TrainConfig,
    apply_overrides,
    dump_config,
    merge_dict,
    parse_override_args,
    preset_config,
    read_config_file,
)
from ..data.io import DataError

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
    parser.add_argument("data", nargs="?", help="training dataset folder (images/ + masks/)")
    parser.add_argument("--out", help="run folder to write (default: runs/<data folder name>)")
    val = parser.add_mutually_exclusive_group()
    val.add_argument("--val", help="validation dataset folder")
    val.add_argument("--val-fraction", type=float, help="hold out this fraction of DATA for validation")
    parser.add_argument(
        "--max-minutes", type=float, help="wall-clock budget; ends cleanly with the best model"
    )
    parser.add_argument(
        "--target",
        choices=("semantic", "three-class"),
        help="what the network learns: the masks' classes (semantic, default) or background / interior / "
        "border from the objects (three-class, for instance segmentation; same as --data.target three_class)",
    )
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
    parser.set_defaults(func=run, accepts_overrides=True)


def resolve_config(args: argparse.Namespace, overrides: dict[str, str]) -> TrainConfig:
    """The config the options describe (the plan is computed for ``--preset auto``)."""
    # --target or --data.target: the plan depends on it
    target = (args.target or overrides.get("data.target", "semantic")).replace("-", "_")
    if args.preset == "auto":
        if not args.data:
            raise ValueError("give the training dataset folder: unetkit train DATA --out RUN")
        from ..training.planner import plan_training

        config = plan_training(
            args.data, val_dir=args.val, max_minutes=args.max_minutes, target=target
        ).config
    else:
        config = preset_config(args.preset)
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

    try:
        overrides = parse_override_args(getattr(args, "overrides", []))
        config = resume_config(args, overrides) if args.resume else resolve_config(args, overrides)
        if args.print_config:
            sys.stdout.write(dump_config(config, "yaml"))
            return 0
        result = train(config, resume=bool(args.resume), progress_bar=not args.no_progress)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (DataError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.status == "interrupted":
        return 130
    print(
        f"best model: {result.path}/model.safetensors; curves: {result.path}/curves.png; "
        f"samples: {result.path}/samples/"
    )
    print(f"next: unetkit evaluate {result.path} TEST_DATA --out {result.path}/report")
    return 0
