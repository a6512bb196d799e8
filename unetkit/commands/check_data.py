"""``unetkit check-data DIR``: scan a dataset without training and report every problem."""

from __future__ import annotations

import argparse

from ..data.check import check_dataset
from ..data.classes import ENCODINGS
from ..utils.atomic import atomic_write_json


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Options that say how to read a dataset (shared with the commands that read one)."""
    parser.add_argument(
        "--classes", metavar="FILE", help="classes file (default: classes.json|csv|txt in DIR)"
    )
    parser.add_argument("--ignore-index", type=int, metavar="N", help="mask value whose pixels are ignored")
    parser.add_argument("--encoding", choices=ENCODINGS, help="mask encoding (default: detected)")
    parser.add_argument(
        "--pages-as-channels", action="store_true", help="read multi-page TIFFs as channels, not 3D stacks"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-data",
        help="check a dataset folder (counts, sizes, classes, problems) without training",
        description="Scan DIR (images/, masks/, optional instances/) or a CSV of image,mask[,instances] "
        "paths and report counts, sizes, dtypes, channels, classes and every problem; a restoration "
        "dataset (inputs/ + targets/) is checked for pairing, sizes and channels. "
        "Exit code 1 when there are problems.",
    )
    parser.add_argument("dataset", metavar="DIR", help="dataset folder or CSV file")
    add_data_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="list the classes found in each file")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.set_defaults(func=run)


def check_pairs(root: str) -> int:
    """``check-data`` on a restoration dataset (``inputs/`` + ``targets/``): pairing, sizes, channels."""
    from ..data.io import DataError
    from ..data.pairs import check_image_pairs, find_image_pairs

    try:
        pairs = find_image_pairs(root)
        scale = check_image_pairs(pairs)
    except DataError as exc:
        print(f"restoration pairs in {root}: {exc}")
        return 1
    print(f"restoration pairs in {root}: {len(pairs)} input/target pairs, targets x{scale} the inputs; "
          "no problems")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..data.pairs import has_pairs

    if has_pairs(args.dataset):
        return check_pairs(args.dataset)
    report = check_dataset(
        args.dataset,
        classes_file=args.classes,
        ignore_index=args.ignore_index,
        encoding=args.encoding,
        pages_as_channels=args.pages_as_channels,
    )
    print(report.format(verbose=args.verbose))
    if args.json:
        atomic_write_json(args.json, {
            "root": str(report.root),
            "images": report.n_images,
            "masks": report.n_masks,
            "instances": report.n_instances,
            "sizes": {"x".join(map(str, k)): v for k, v in report.sizes.items()},
            "dtypes": dict(report.dtypes),
            "channels": {str(k): v for k, v in report.channels.items()},
            "classes": report.classes.to_dict() if report.classes else None,
            "class_pixels": {str(k): v for k, v in sorted(report.class_pixels.items())},
            "ignored_pixels": report.ignored_pixels,
            "warnings": report.warnings,
            "problems": report.problems,
        })
    return 0 if report.ok else 1
