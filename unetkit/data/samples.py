"""Datasets on disk: finding image/mask pairs, splitting them, and loading one sample.

Layouts:

- ``DIR/images/*`` with ``DIR/masks/*`` (paired by file stem; a mask may add ``_mask``, ``_masks``,
  ``_label`` or ``_labels`` to the stem) and optional ``DIR/instances/*`` (one id per object);
  a classes file (``classes.json``/``.csv``/``.txt``) in ``DIR`` names the classes;
- a CSV file of ``image,mask[,instances]`` paths (relative to the CSV's folder; header optional);
- a folder of images only (for prediction).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .classes import ClassInfo
from .instances import label_objects
from .io import (
    IMAGE_SUFFIXES,
    DataError,
    check_finite,
    is_image_path,
    list_images,
    read_image,
    read_label_image,
    stem_of,
    suffix_of,
)
from .normalize import NormalizeConfig, apply_normalization, normalization_params

PathLike = Union[str, "os.PathLike[str]"]

MASK_TAGS = ("_mask", "_masks", "_label", "_labels")


@dataclass
class Sample:
    """One image with its optional semantic mask and instance label image."""

    image: Path
    mask: Optional[Path] = None
    instances: Optional[Path] = None

    @property
    def name(self) -> str:
        return stem_of(self.image)

    @property
    def labelled(self) -> bool:
        return self.mask is not None or self.instances is not None


def default_num_workers() -> int:
    """DataLoader workers: one core left for the training step, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# -- finding samples ---------------------------------------------------------------------------
def _label_key(path: Path) -> str:
    stem = stem_of(path)
    for tag in MASK_TAGS:
        if stem.lower().endswith(tag) and len(stem) > len(tag):
            return stem[: -len(tag)]
    return stem


def _pair(images: list[Path], labels: list[Path], kind: str, problems: list[str]) -> dict[str, Path]:
    """Match label files to image stems; report label files without an image and duplicates."""
    image_stems = {stem_of(p) for p in images}
    by_stem: dict[str, Path] = {}
    for path in labels:
        stem = stem_of(path)
        key = stem if stem in image_stems else _label_key(path)
        if key in by_stem:
            problems.append(
                f"{path}: two {kind} files for image {key!r} ({by_stem[key].name} and {path.name}); keep one"
            )
            continue
        by_stem[key] = path
    for key, path in sorted(by_stem.items()):
        if key not in image_stems:
            problems.append(
                f"{path}: extra {kind} file with no image of the same name; remove it or add the image"
            )
    return by_stem


def scan_dataset(root: PathLike) -> tuple[list[Sample], list[str]]:
    """The samples of a dataset and the problems found while pairing files (extra/missing masks...)."""
    root = Path(root)
    problems: list[str] = []
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root}: a dataset is a folder or a CSV file of image,mask[,instances] paths")
        return _scan_csv(root, problems), problems
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; give a folder with images/ and masks/, or a CSV file")
    image_dir = root / "images"
    if not image_dir.is_dir():
        images = list_images(root)
        if not images:
            raise DataError(
                f"{root}: no images/ folder and no images in it; lay the dataset out as "
                f"{root}/images/* and {root}/masks/*, or give a CSV file"
            )
        return [Sample(p) for p in images], problems
    images = list_images(image_dir)
    if not images:
        raise DataError(f"{image_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    stems = Counter(stem_of(p) for p in images)
    for stem, count in sorted(stems.items()):
        if count > 1:
            names = ", ".join(p.name for p in images if stem_of(p) == stem)
            problems.append(f"{image_dir}: {count} images share the name {stem!r} ({names}); keep one")
    _report_other_files(image_dir, problems)
    masks = _pair(images, _labels_in(root / "masks", problems), "mask", problems)
    instances = _pair(images, _labels_in(root / "instances", problems), "instance", problems)
    labelled = (root / "masks").is_dir() or (root / "instances").is_dir()
    samples = []
    for path in images:
        sample = Sample(path, masks.get(stem_of(path)), instances.get(stem_of(path)))
        if labelled and not sample.labelled:
            problems.append(
                f"{path}: missing mask (no file named {stem_of(path)}.* or {stem_of(path)}_mask.* in "
                f"{root / 'masks'}); add the mask or move the image out of the dataset"
            )
        samples.append(sample)
    return samples, problems


def _labels_in(folder: Path, problems: list[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    _report_other_files(folder, problems)
    return list_images(folder)


def _report_other_files(folder: Path, problems: list[str]) -> None:
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and not is_image_path(path):
            problems.append(
                f"{path}: not a supported image file ({suffix_of(path) or 'no suffix'}); "
                f"convert it to one of {', '.join(IMAGE_SUFFIXES)} or move it out of {folder}"
            )


def _scan_csv(path: Path, problems: list[str]) -> list[Sample]:
    rows = [r for r in csv.reader(path.read_text(encoding="utf-8-sig").splitlines()) if r and r[0].strip()]
    if rows and rows[0][0].strip().lower() in ("image", "images", "image_path"):
        rows = rows[1:]
    samples = []
    for line, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row] + ["", ""]
        paths = [(path.parent / c) if c else None for c in cells[:3]]
        for p in paths:
            if p is not None and not p.is_file():
                problems.append(f"{path}: row {line}: {p} does not exist; fix the path (relative to the CSV)")
        if paths[0] is not None and paths[0].is_file():
            labels = [p if p is not None and p.is_file() else None for p in paths[1:]]
            samples.append(Sample(paths[0], *labels))
    if not samples:
        raise DataError(
            f"{path}: no rows with an existing image; write one 'image,mask[,instances]' row per image"
        )
    return samples


def find_samples(root: PathLike) -> list[Sample]:
    """Samples of a dataset folder or CSV file (see the module docstring), sorted by image name."""
    return scan_dataset(root)[0]


def dataset_root(samples: Sequence[Sample]) -> Optional[Path]:
    """The folder holding ``images/`` of the first sample (where its classes file lives)."""
    if not samples:
        return None
    parent = samples[0].image.parent
    return parent.parent if parent.name == "images" else parent


# -- splitting ----------------------------------------------------------------------------------
def split_samples(
    samples: Sequence[Sample],
    val_fraction: float,
    seed: int,
    *,
    val_names: Optional[Sequence[str]] = None,
) -> tuple[list[Sample], list[Sample]]:
    """Deterministic train/validation split.

    With ``val_names`` (image stems or file names) those samples are the validation set. Otherwise a
    seeded permutation of the samples sorted by image path; at least one sample goes to each side
    when ``0 < val_fraction`` and there are two or more samples.
    """
    ordered = sorted(samples, key=lambda s: str(s.image))
    if val_names is not None:
        wanted = {stem_of(n) for n in val_names}
        unknown = wanted - {s.name for s in ordered}
        if unknown:
            raise DataError(f"validation names not in the dataset: {sorted(unknown)[:5]}; check the list")
        return [s for s in ordered if s.name not in wanted], [s for s in ordered if s.name in wanted]
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(ordered)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [s for i, s in enumerate(ordered) if i not in val_idx]
    return train, [s for i, s in enumerate(ordered) if i in val_idx]


# -- loading -----------------------------------------------------------------------------------
def load_labels(sample: Sample, classes: ClassInfo, spatial: Optional[Sequence[int]] = None) -> np.ndarray:
    """Class ids ``(*S)`` int64 of a sample (from its mask, else foreground of its instance image)."""
    if sample.mask is not None:
        labels = classes.decode(read_label_image(sample.mask), source=sample.mask)
        path = sample.mask
    elif sample.instances is not None:
        labels = (read_label_image(sample.instances) > 0).astype(np.int64)
        path = sample.instances
    else:
        raise DataError(f"{sample.image}: no mask and no instance image; add masks/{sample.name}.png")
    if spatial is not None and tuple(labels.shape) != tuple(spatial):
        raise DataError(
            f"{path}: size {labels.shape} differs from the image size {tuple(spatial)}; the two must match"
        )
    return labels


def load_instances(sample: Sample, labels: Optional[np.ndarray] = None,
                   classes: Optional[ClassInfo] = None) -> np.ndarray:
    """Instance ids ``(*S)``: the instance image (or the mask, for ``instances``-encoded masks), else
    connected components of the foreground of ``labels`` (touching objects then merge)."""
    if sample.instances is not None:
        return read_label_image(sample.instances).astype(np.int32, copy=False)
    if sample.mask is not None and classes is not None and classes.encoding == "instances":
        raw = read_label_image(sample.mask).astype(np.int32, copy=False)
        return np.where(raw == classes.ignore_index, 0, raw) if classes.ignore_index is not None else raw
    if labels is None:
        raise DataError(f"{sample.image}: no instance image and no mask to derive objects from")
    return label_objects(labels > 0)


def load_sample(
    sample: Sample, classes: ClassInfo, normalize: NormalizeConfig, *, pages_as_channels: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A whole image for validation/evaluation: normalised float32 ``(C, *S)`` and int64 labels ``(*S)``;
    NaN/inf pixels are a :class:`DataError`."""
    image = check_finite(read_image(sample.image, pages_as_channels=pages_as_channels), sample.image)
    labels = load_labels(sample, classes, image.shape[1:])
    return apply_normalization(image, *normalization_params(image, normalize)), labels
