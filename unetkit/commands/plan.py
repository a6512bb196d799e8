"""``unetkit plan DATA``: fingerprint the dataset and this machine and print the training plan and why."""

from __future__ import annotations

import argparse
import sys

from ..data.io import DataError
from .train import (
    CLI_CONDITIONS,
    CLI_TASKS,
    add_self_supervised_option,
    generation_options,
    restoration_options,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="propose a training config for a dataset and say why", description=__doc__
    )
    parser.add_argument("data", help="training dataset folder (images/ + masks/)")
    parser.add_argument("--val", help="validation dataset folder")
    parser.add_argument("--max-minutes", type=float, help="time budget the plan must fit")
    parser.add_argument("--save", help="also write the planned config here (.json or .yaml)")
    parser.add_argument("--task", choices=CLI_TASKS, default="segment", help="as for `unetkit train`")
    parser.add_argument("--noise", help="denoise: the noise, as for `unetkit train`")
    parser.add_argument("--scale", type=int, help="super-resolve: the scale, as for `unetkit train`")
    add_self_supervised_option(parser)
    parser.add_argument("--condition", choices=CLI_CONDITIONS, help="generate: as for `unetkit train`")
    parser.add_argument(
        "--no-timing", action="store_true", help="skip timing a training step (epochs unplanned)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import save_config
    from ..training.generation_plan import plan_generation
    from ..training.planner import plan_training
    from ..training.restoration_plan import plan_restoration

    try:
        restoration = restoration_options(args)
        generation = generation_options(args)
        if generation is not None:
            plan = plan_generation(args.data, generation, val_dir=args.val, max_minutes=args.max_minutes)
        elif restoration is not None:
            plan = plan_restoration(
                args.data, restoration, val_dir=args.val, max_minutes=args.max_minutes,
                measure=not args.no_timing,
            )
        else:
            plan = plan_training(
                args.data, val_dir=args.val, max_minutes=args.max_minutes, measure=not args.no_timing
            )
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(plan.format())
    if args.save:
        print(f"config written to {save_config(plan.config, args.save)}")
    return 0
