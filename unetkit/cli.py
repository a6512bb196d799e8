"""The ``unetkit`` command line: one sub-command per module in :mod:`unetkit.commands`.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed arguments and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from . import __version__

COMMAND_MODULES = (
    "unetkit.commands.demo",
    "unetkit.commands.check_data",
    "unetkit.commands.show_augmentations",
    "unetkit.commands.predict",
    "unetkit.commands.export",
    "unetkit.commands.serve",
    "unetkit.commands.train",
    "unetkit.commands.evaluate",
    "unetkit.commands.generate",
    "unetkit.commands.plan",
)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and the sub-command parsers by name."""
    parser = argparse.ArgumentParser(
        prog="unetkit",
        description="Train, evaluate and run U-Nets on your own images.",
    )
    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser, subparsers.choices


def takes_overrides(commands: dict[str, argparse.ArgumentParser], argv: Sequence[str]) -> bool:
    """Whether the sub-command named in ``argv`` takes config fields (``--section.field VALUE``)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    return command in commands and bool(commands[command].get_default("accepts_overrides"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .config import split_config_args

    parser, commands = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only commands that take config fields get them split off first, so that another command's
    # own option of the same name (``predict --device``) stays that command's option.
    rest, fields = split_config_args(argv) if takes_overrides(commands, argv) else (argv, [])
    args, extra = parser.parse_known_args(rest)
    extra = fields + extra
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra  # config fields (--section.field VALUE) for the commands that take them
    args.argv = argv  # the command line as given: --nproc starts it again in each process
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
