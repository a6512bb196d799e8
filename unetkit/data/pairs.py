"""Restoration datasets on disk: input/target pairs, or single images to degrade on the fly.

Layouts:

- ``DIR/inputs/*`` + ``DIR/targets/*`` paired by file stem (e.g. low-SNR / high-SNR acquisitions,
  CARE; a target may be ``scale`` times larger than its input, for super-resolution);
- ``DIR/images/*`` or images directly in ``DIR`` (clean images for denoising or super-resolution
  with a synthetic degradation; noisy images for Noise2Void).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .io import DataError, check_finite, list_images, read_image, stem_of

PathLike = Union[str, Path]
INPUTS_DIR = "inputs"
TARGETS_DIR = "targets"


@dataclass(frozen=True)
class ImagePair:
    """One training or validation image, with its target when the dataset has pairs."""

    image: Path
    target: Optional[Path] = None

    @property
    def name(self) -> str:
        return stem_of(self.image)


def has_pairs(root: PathLike) -> bool:
    """Whether ``root`` holds ``inputs/`` and ``targets/``."""
    root = Path(root)
    return (root / INPUTS_DIR).is_dir() and (root / TARGETS_DIR).is_dir()


def find_image_pairs(root: PathLike) -> list[ImagePair]:
    """The images of a restoration dataset (see the module doc), sorted by name.

    Pairs are matched by stem; an input without a target (or the reverse) is a :class:`DataError`
    naming every unmatched file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; give a folder of images, or one with inputs/ and targets/")
    if has_pairs(root):
        inputs = {stem_of(p): p for p in list_images(root / INPUTS_DIR)}
        targets = {stem_of(p): p for p in list_images(root / TARGETS_DIR)}
        problems = [
            f"{inputs[s]}: no target named {s}.* in {root / TARGETS_DIR}; add it or remove the input"
            for s in sorted(set(inputs) - set(targets))
        ] + [
            f"{targets[s]}: no input named {s}.* in {root / INPUTS_DIR}; add it or remove the target"
            for s in sorted(set(targets) - set(inputs))
        ]
        if problems:
            raise DataError(f"{root}: inputs and targets are paired by name:\n  " + "\n  ".join(problems))
        if not inputs:
            raise DataError(f"{root / INPUTS_DIR}: no image files")
        return [ImagePair(inputs[s], targets[s]) for s in sorted(inputs)]
    for folder in (root / "images", root / INPUTS_DIR, root):
        if folder.is_dir():
            images = list_images(folder)
            if images:
                return [ImagePair(p) for p in images]
    raise DataError(f"{root}: no images; give a folder of images, or one with inputs/ and targets/")


def intensity_max(image: np.ndarray) -> float:
    """The top of an image's intensity scale: its dtype's for integers, its own maximum (at least 1) for
    floats (used as the Poisson noise scale and the default PSNR data range)."""
    if image.dtype.kind in "ui":
        return float(np.iinfo(image.dtype).max)
    return max(1.0, float(np.nanmax(image)))


def read_checked_image(path: Path) -> np.ndarray:
    """:func:`~unetkit.data.io.read_image`, refusing NaN/inf values with a :class:`DataError`."""
    return check_finite(read_image(path), path)


def check_image_pairs(
    pairs: Sequence[ImagePair], scale: Optional[int] = None, *, same_channels: bool = True
) -> int:
    """Read every image once and raise one :class:`DataError` naming every problem: unreadable files,
    NaN/inf, images whose channels or dimension differ from most images', inputs and targets with
    different channels, and targets that are not ``scale`` times their input (``scale=None``: taken from
    the first pair). ``same_channels=False`` lets grey and colour images mix (validation images of a
    grey-level model). Returns the scale."""
    problems: list[str] = []
    shapes: list[tuple[ImagePair, tuple[int, ...], Optional[tuple[int, ...]]]] = []
    for pair in pairs:
        try:
            image = read_checked_image(pair.image).shape
            target = read_checked_image(pair.target).shape if pair.target is not None else None
        except DataError as exc:
            problems.append(str(exc))
            continue
        shapes.append((pair, image, target))
    kinds = Counter((image[0] if same_channels else None, len(image) - 1) for _, image, _ in shapes)
    (channels, dims), count = kinds.most_common(1)[0] if kinds else ((None, None), 0)
    for pair, image, target in shapes:
        if (same_channels and image[0] != channels) or len(image) - 1 != dims:
            most = f"{channels} channel(s), {dims}D" if same_channels else f"{dims}D"
            problems.append(
                f"{pair.image}: {image[0]} channel(s), {len(image) - 1}D, but {count} image(s) have {most}; "
                "convert the images to one kind"
            )
        if target is None:
            continue
        if target[0] != image[0]:
            problems.append(
                f"{pair.target}: {target[0]} channel(s) but its input {pair.image.name} has "
                f"{image[0]}; input and target need the same channels"
            )
            continue
        ratios = {t / i for t, i in zip(target[1:], image[1:])}
        ratio = ratios.pop() if len(ratios) == 1 else 0.0
        if scale is None and ratio >= 1 and ratio.is_integer():
            scale = int(ratio)
        expected = tuple(s * (scale or 1) for s in image[1:])
        if tuple(target[1:]) != expected:
            problems.append(
                f"{pair.target}: size {target[1:]} but its input {pair.image.name} is "
                f"{image[1:]}, so the target should be {expected}"
                + (f" (scale {scale})" if scale and scale > 1 else " (the same size)")
                + "; crop or resize one of them"
            )
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the images:\n  " + "\n  ".join(problems))
    return scale or 1
