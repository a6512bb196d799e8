"""``unetkit show-augmentations DIR --out grid.png``: what training will see.

One image of the dataset and its mask, cut into training patches under N random augmentations,
drawn as a grid: top row the image patches, bottom row the masks in the class colours (ignored
pixels grey). The first column is the patch without augmentation. 3D volumes show the middle slice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..data.detect import detect_classes
from ..data.io import DataError
from ..data.normalize import NormalizeConfig
from ..data.patches import PatchDataset
from ..data.samples import find_samples
from ..data.transforms import AugmentConfig
from ..utils.atomic import atomic_path
from .check_data import add_data_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show-augmentations",
        help="draw one image and its mask under N random augmentations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", metavar="DIR", help="dataset folder or CSV file")
    parser.add_argument("--out", required=True, help="output picture (PNG)")
    parser.add_argument("-n", "--num", type=int, default=7, help="number of augmented patches (default 7)")
    parser.add_argument("--image", help="name (stem) of the image to show (default: the first)")
    parser.add_argument("--patch-size", type=int, default=256, help="patch size in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--augment", metavar="FILE",
        help="JSON/YAML with augmentation settings, or a training config with an 'augment' section",
    )
    parser.add_argument("--all", action="store_true", help="turn every augmentation on (probability 1)")
    add_data_options(parser)
    parser.set_defaults(func=run)


def load_augment_config(path: str | None, all_on: bool) -> AugmentConfig:
    if all_on:
        return AugmentConfig.all_on()
    if path is None:
        return AugmentConfig()
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    return AugmentConfig.from_dict(data.get("augment", data) if isinstance(data, dict) else {})


def _display(image: np.ndarray) -> np.ndarray:
    """``(C, *P)`` normalised patch -> ``(H, W)`` or ``(H, W, 3)`` in [0, 1] (middle slice for 3D)."""
    if image.ndim == 4:
        image = image[:, image.shape[1] // 2]
    shown = image[:3] if image.shape[0] >= 3 else image[:1]
    lo, hi = np.percentile(shown, [0.5, 99.5])
    shown = np.clip((shown - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.moveaxis(shown, 0, -1) if shown.shape[0] == 3 else shown[0]


def _colour_mask(mask: np.ndarray, colors: list[tuple[int, int, int]], ignore: int | None) -> np.ndarray:
    if mask.ndim == 3:
        mask = mask[mask.shape[0] // 2]
    table = np.array(list(colors) + [(128, 128, 128)], dtype=np.uint8)
    index = np.where((mask >= 0) & (mask < len(colors)), mask, len(colors))
    if ignore is not None:
        index = np.where(mask == ignore, len(colors), index)
    return table[index]


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        samples = [s for s in find_samples(args.dataset) if s.labelled]
        if args.image:
            samples = [s for s in samples if s.name == args.image]
        if not samples:
            named = f" named {args.image}" if args.image else ""
            raise DataError(f"{args.dataset}: no labelled image{named}")
        classes = detect_classes(
            samples, classes_file=args.classes, ignore_index=args.ignore_index, encoding=args.encoding
        )
    except DataError as exc:
        print(f"error: {exc}")
        return 1
    augment = load_augment_config(args.augment, args.all)
    common = dict(patch_size=args.patch_size, normalize=NormalizeConfig(), seed=args.seed,
                  pages_as_channels=args.pages_as_channels)
    plain = PatchDataset(samples[:1], classes, augment=None, patches_per_epoch=1, **common)
    augmented = PatchDataset(samples[:1], classes, augment=augment, patches_per_epoch=args.num, **common)
    items = [plain[0]] + [augmented[i] for i in range(args.num)]
    fig, axes = plt.subplots(2, len(items), figsize=(2.2 * len(items), 4.6), squeeze=False)
    for col, item in enumerate(items):
        axes[0, col].imshow(_display(item["image"].numpy()), cmap="gray", interpolation="nearest")
        axes[1, col].imshow(_colour_mask(item["mask"].numpy(), classes.colors or [], classes.ignore_index),
                            interpolation="nearest")
        axes[0, col].set_title("original" if col == 0 else f"augmented {col}", fontsize=8)
        for row in range(2):
            axes[row, col].axis("off")
    fig.suptitle(f"{samples[0].image.name}: patches of {args.patch_size} px", fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    print(f"wrote {out}")
    return 0
