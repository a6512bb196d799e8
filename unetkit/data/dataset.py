"""Datasets on disk: finding image/mask pairs, detecting the classes, checking, splitting, patches.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .classes import ClassesFile, ClassInfo, default_colors, find_classes_file, read_classes_file
from .instances import TARGETS, label_objects, three_class_from_instances
from .io import (
    IMAGE_SUFFIXES,
    DataError,
    is_image_path,
    is_volume_path,
    list_images,
    read_image,
    read_label_image,
    read_palette,
    stem_of,
    suffix_of,
)
from .normalize import NormalizeConfig, apply_normalization, normalization_params
from .scale import median_object_diameter, resize_spatial, scale_factor, scaled_shape
from .transforms import AugmentConfig, Augmenter
from .weights import BorderWeightConfig, border_weight_map

PathLike = Union[str, "os.PathLike[str]"]

MASK_TAGS = ("_mask", "_masks", "_label", "_labels")
# A label image with more distinct values than this (or values above 255) holds instance ids.
MAX_CLASS_IDS = 64
# 0/255 masks whose other grey levels cover less than this fraction of pixels are binary255 with
# stray values (anti-aliasing, JPEG); more than that and the masks are not binary.
STRAY_FRACTION = 0.05


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


# -- class detection ---------------------------------------------------------------------------
@dataclass
class MaskSummary:
    """Value (or RGB colour) histogram and shape of one raw label image."""

    path: Path
    shape: tuple[int, ...]
    dtype: str
    counts: dict[Any, int]
    rgb: bool = False
    palette: bool = False


def summarize_mask(path: Path, raw: Optional[np.ndarray] = None) -> MaskSummary:
    raw = read_label_image(path) if raw is None else raw
    palette = read_palette(path) is not None
    is_rgb = raw.ndim == 3 and raw.shape[-1] == 3 and not is_volume_path(path)
    if is_rgb:
        flat = raw.reshape(-1, 3)
        if np.array_equal(flat[:, 0], flat[:, 1]) and np.array_equal(flat[:, 0], flat[:, 2]):
            raw, is_rgb = raw[..., 0], False
    if is_rgb:
        colors, counts = np.unique(raw.reshape(-1, 3), axis=0, return_counts=True)
        hist = {tuple(int(v) for v in c): int(n) for c, n in zip(colors, counts)}
        return MaskSummary(path, raw.shape[:-1], str(raw.dtype), hist, rgb=True)
    if raw.dtype.kind in "ub" and raw.size and int(raw.max()) < 1 << 17:
        counts = np.bincount(raw.ravel().astype(np.int64))
        hist = {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    else:
        values, counts = np.unique(raw, return_counts=True)
        hist = {int(v): int(n) for v, n in zip(values, counts)}
    return MaskSummary(path, raw.shape, str(raw.dtype), hist, palette=palette)


def _classes_file(root: Optional[Path], classes_file: Optional[PathLike]) -> Optional[ClassesFile]:
    if classes_file is not None:
        return read_classes_file(classes_file)
    found = find_classes_file(root) if root is not None else None
    return read_classes_file(found) if found is not None else None


def classes_from_summaries(
    summaries: Sequence[MaskSummary],
    *,
    classes_file: Optional[ClassesFile] = None,
    ignore_index: Optional[int] = None,
    encoding: Optional[str] = None,
    has_instances: bool = False,
) -> tuple[ClassInfo, list[str]]:
    """Decide the encoding and the classes from mask histograms; returns the classes and warnings."""
    notes: list[str] = []
    cf = classes_file
    encoding = encoding or (cf.encoding if cf else None)
    if ignore_index is None and cf is not None:
        ignore_index = cf.ignore_index
    values: Counter = Counter()
    for s in summaries:
        values.update(s.counts)
    if encoding is None:
        encoding = _guess_encoding(summaries, values, cf, ignore_index, has_instances, notes)
    if encoding == "rgb":
        return _rgb_classes(values, cf, ignore_index, notes), notes
    if encoding in ("binary01", "binary255", "instances"):
        names = cf.names if cf and cf.names else ["background", "foreground"]
        if len(names) != 2:
            where = cf.path if cf else "classes"
            raise DataError(f"{where}: a binary encoding needs 2 class names, got {names}")
        return ClassInfo(names, cf.colors if cf else None, ignore_index, encoding), notes
    # ids / palette
    if ignore_index is None and 255 in values and len(values) > 2 and max(values) == 255:
        ignore_index = 255
        notes.append("value 255 is treated as 'ignore' (the usual convention for class-id masks)")
    ids = [int(v) for v in values if v != ignore_index]
    if cf and cf.names:
        names = cf.names
    else:
        names = [f"class_{i}" for i in range(max(ids, default=0) + 1)]
    colors = cf.colors if cf and cf.colors else None
    if colors is None and encoding == "palette":
        palette = read_palette(next(s.path for s in summaries if s.palette)) or []
        fallback = default_colors(len(names))
        colors = [tuple(palette[i]) if i < len(palette) else c for i, c in enumerate(fallback)]
    if ignore_index is not None and 0 <= ignore_index < len(names):
        raise DataError(
            f"ignore index {ignore_index} is also the class {names[ignore_index]!r}; give the ignored value "
            "its own id (after the last class, or 255)"
        )
    return ClassInfo(names, colors, ignore_index, encoding), notes


def _guess_encoding(summaries, values: Counter, cf, ignore_index, has_instances, notes) -> str:
    if not summaries:
        if has_instances:
            return "instances"
        raise DataError("no masks and no instance images: cannot detect the classes")
    if any(s.rgb for s in summaries):
        return "rgb"
    if all(s.palette for s in summaries):
        return "palette"
    keys = set(values) - ({ignore_index} if ignore_index is not None else set())
    total = sum(values.values())
    if keys <= {0, 1}:
        if keys == {0}:
            notes.append("every mask is empty (all 0)")
        return "binary01"
    binary_pixels = values.get(0, 0) + values.get(255, 0)
    if 255 in keys and (keys <= {0, 255} or binary_pixels >= (1 - STRAY_FRACTION) * total):
        return "binary255"
    per_file = max(len(s.counts) for s in summaries)
    if max(keys) > 255 or per_file > MAX_CLASS_IDS:
        notes.append(f"masks hold many ids (up to {per_file} per file): read as instance labels")
        return "instances"
    return "ids"


def _rgb_classes(values: Counter, cf, ignore_index, notes) -> ClassInfo:
    if cf is not None and cf.colors:
        return ClassInfo(cf.names or [], cf.colors, ignore_index, "rgb", cf.ignore_color)
    colors = sorted(c if isinstance(c, tuple) else (c, c, c) for c in values)
    if len(colors) > MAX_CLASS_IDS:
        raise DataError(
            f"RGB masks with {len(colors)} different colours and no classes file; add classes.json "
            "(name -> colour) to the dataset folder, or re-export the masks without anti-aliasing"
        )
    notes.append(
        f"RGB masks without a classes file: {len(colors)} colours found became classes in sorted "
        "order; add classes.json (name -> colour) to name them"
    )
    given = cf.names if cf and cf.names else []
    names = [given[i] if i < len(given) else f"class_{i}" for i in range(len(colors))]
    return ClassInfo(names, colors, ignore_index, "rgb")


def detect_classes(
    samples: Sequence[Sample],
    *,
    classes_file: Optional[PathLike] = None,
    ignore_index: Optional[int] = None,
    encoding: Optional[str] = None,
    root: Optional[PathLike] = None,
) -> ClassInfo:
    """Detect the mask encoding and the classes of ``samples`` (reads every mask once).

    A classes file (``classes_file``, or ``classes.json|csv|txt`` in the dataset folder) gives the
    names, colours, ignore index and, with an ``"encoding"`` key, the encoding; ``ignore_index``
    and ``encoding`` override both.
    """
    root_path = Path(root) if root is not None else dataset_root(samples)
    summaries = [summarize_mask(s.mask) for s in samples if s.mask is not None]
    classes, _ = classes_from_summaries(
        summaries,
        classes_file=_classes_file(root_path, classes_file),
        ignore_index=ignore_index,
        encoding=encoding,
        has_instances=any(s.instances is not None for s in samples),
    )
    return classes


# -- checking ------------------------------------------------------------------------------------
@dataclass
class CheckReport:
    """What ``unetkit check-data`` found: counts, sizes, classes, and every problem."""

    root: Path
    n_images: int = 0
    n_masks: int = 0
    n_instances: int = 0
    sizes: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    dims: Counter = field(default_factory=Counter)
    classes: Optional[ClassInfo] = None
    class_pixels: Counter = field(default_factory=Counter)
    class_files: Counter = field(default_factory=Counter)
    ignored_pixels: int = 0
    objects: int = 0
    per_file: list[tuple[str, list[int]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_problems(self) -> None:
        """Raise :class:`DataError` listing every problem (what training does before it starts)."""
        if self.problems:
            listed = "\n  - ".join(self.problems)
            raise DataError(f"{len(self.problems)} problem(s) in the dataset {self.root}:\n  - {listed}")

    def format(self, verbose: bool = False) -> str:
        """A human-readable report; ``verbose`` adds the classes found in each file."""
        lines = [
            f"dataset {self.root}",
            f"  images: {self.n_images}   masks: {self.n_masks}   instance images: {self.n_instances}",
            "  dimensions: " + _fmt_counter(self.dims, lambda d: f"{d}D"),
            "  sizes: " + _fmt_counter(self.sizes, lambda s: "x".join(map(str, s))),
            "  dtypes: " + _fmt_counter(self.dtypes),
            "  channels: " + _fmt_counter(self.channels),
        ]
        if self.n_instances:
            lines.append(f"  objects in instance images: {self.objects}")
        if self.classes is not None:
            c = self.classes
            ignore = f", ignore index {c.ignore_index}" if c.ignore_index is not None else ""
            lines.append(f"  mask encoding: {c.encoding}, {c.num_classes} classes{ignore}")
            total = sum(self.class_pixels.values()) + self.ignored_pixels
            lines.append(f"    {'id':>3}  {'name':<16} {'pixels':>13} {'fraction':>9} {'files':>6}")
            for i, name in enumerate(c.names):
                pixels = self.class_pixels.get(i, 0)
                frac = pixels / total if total else 0.0
                files = self.class_files.get(i, 0)
                lines.append(f"    {i:>3}  {name:<16} {pixels:>13,} {frac:>9.4f} {files:>6}")
            if c.ignore_index is not None:
                frac = self.ignored_pixels / total if total else 0.0
                ignored = self.ignored_pixels
                lines.append(f"    {c.ignore_index:>3}  {'(ignored)':<16} {ignored:>13,} {frac:>9.4f}")
        if verbose and self.per_file:
            lines.append("  classes per file:")
            lines += [f"    {name}: {ids}" for name, ids in self.per_file]
        for w in self.warnings:
            lines.append(f"  note: {w}")
        if self.problems:
            lines.append(f"  {len(self.problems)} PROBLEM(S):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("  no problems found")
        return "\n".join(lines)


def _fmt_counter(counter: Counter, fmt=str, limit: int = 6) -> str:
    items = counter.most_common()
    text = ", ".join(f"{fmt(k)} ({n})" for k, n in items[:limit])
    return text + (f", ... {len(items) - limit} more" if len(items) > limit else "") if items else "-"


def _check_image(sample: Sample, report: CheckReport, pages_as_channels: bool) -> Optional[tuple[int, ...]]:
    try:
        image = read_image(sample.image, pages_as_channels=pages_as_channels)
    except DataError as exc:
        report.problems.append(str(exc))
        return None
    spatial = image.shape[1:]
    report.sizes[spatial] += 1
    report.dtypes[str(image.dtype)] += 1
    report.channels[image.shape[0]] += 1
    report.dims[len(spatial)] += 1
    if image.dtype.kind == "f":
        bad = ~np.isfinite(image)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            report.problems.append(
                f"{sample.image}: {int(bad.sum())} NaN/inf value(s) (first at channel, position {first}); "
                "replace them (e.g. with 0) or re-export the image"
            )
    if image.size and image.min() == image.max():
        report.warnings.append(f"{sample.image}: every pixel has the value {image.flat[0]} (blank image)")
    return spatial


def check_dataset(
    root: PathLike,
    *,
    classes_file: Optional[PathLike] = None,
    ignore_index: Optional[int] = None,
    encoding: Optional[str] = None,
    pages_as_channels: bool = False,
) -> CheckReport:
    """Scan a dataset without training: counts, sizes, classes and every problem.

    Problems (``report.problems``) are what training refuses: missing/extra masks, size mismatches,
    unreadable or truncated files, unknown colours, values outside the encoding (stray grey levels),
    NaN/inf, empty images, mixed channel counts or dimensions.
    """
    root = Path(root)
    report = CheckReport(root=root)
    try:
        samples, report.problems = scan_dataset(root)
    except DataError as exc:
        report.problems.append(str(exc))
        return report
    report.n_images = len(samples)
    summaries: list[MaskSummary] = []
    for sample in samples:
        spatial = _check_image(sample, report, pages_as_channels)
        for kind, path in (("mask", sample.mask), ("instance image", sample.instances)):
            if path is None:
                continue
            try:
                raw = read_label_image(path)
            except DataError as exc:
                report.problems.append(str(exc))
                continue
            if kind == "mask":
                report.n_masks += 1
                summary = summarize_mask(path, raw)
                summaries.append(summary)
                shape = summary.shape
            else:
                report.n_instances += 1
                shape = raw.shape
                report.objects += len(np.unique(raw)) - int((raw == 0).any())
            if spatial is not None and tuple(shape) != tuple(spatial):
                report.problems.append(
                    f"{path}: {kind} size {'x'.join(map(str, shape))} differs from the image size "
                    f"{'x'.join(map(str, spatial))} ({sample.image.name}); the two must match pixel for pixel"
                )
    if len(report.channels) > 1:
        report.problems.append(
            f"{root}: images have different numbers of channels ({_fmt_counter(report.channels)}); "
            "convert them all to the same (e.g. all greyscale or all RGB)"
        )
    if len(report.dims) > 1:
        report.problems.append(f"{root}: 2D images and 3D volumes are mixed; keep one kind per dataset")
    if not summaries and not report.n_instances:
        return report
    try:
        cf = _classes_file(dataset_root(samples) if not root.is_dir() else root, classes_file)
        report.classes, notes = classes_from_summaries(
            summaries, classes_file=cf, ignore_index=ignore_index, encoding=encoding,
            has_instances=report.n_instances > 0,
        )
    except DataError as exc:
        report.problems.append(str(exc))
        return report
    report.warnings += notes
    _count_classes(report, summaries, samples)
    return report


def _count_classes(report: CheckReport, summaries: Sequence[MaskSummary], samples: Sequence[Sample]) -> None:
    classes = report.classes
    assert classes is not None
    for s in summaries:
        keys = list(s.counts)
        raw = np.array(keys, dtype=np.uint8).reshape(-1, 3) if s.rgb else np.array(keys, dtype=np.int64)
        labels, invalid = classes.decode_checked(raw)
        found = set()
        for key, label in zip(keys, labels.tolist()):
            if label < 0:
                continue
            if label == classes.ignore_index:
                report.ignored_pixels += s.counts[key]
            else:
                report.class_pixels[label] += s.counts[key]
                found.add(label)
        for label in found:
            report.class_files[label] += 1
        report.per_file.append((s.path.name, sorted(found)))
        if invalid is not None:
            # Re-read the file only to name an example position.
            located = classes.find_invalid(read_label_image(s.path)) or invalid
            report.problems.append(
                f"{s.path}: " + located.describe(classes.encoding) + "; " + classes.fix_hint(located)
            )
    if not summaries:
        # Instance images only: foreground = any object.
        for sample in samples:
            if sample.instances is not None:
                try:
                    raw = read_label_image(sample.instances)
                except DataError:
                    continue
                report.class_pixels[1] += int((raw > 0).sum())
                report.class_pixels[0] += int((raw == 0).sum())


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
    """A whole image for validation/evaluation: normalised float32 ``(C, *S)`` and int64 labels ``(*S)``."""
    image = read_image(sample.image, pages_as_channels=pages_as_channels)
    labels = load_labels(sample, classes, image.shape[1:])
    return apply_normalization(image, *normalization_params(image, normalize)), labels


# -- patches -------------------------------------------------------------------------------------
@dataclass
class _Cached:
    image: np.ndarray  # raw (C, *S), as read
    offset: np.ndarray  # (C,)
    scale: np.ndarray  # (C,)
    labels: np.ndarray  # (*S) small integer dtype
    weight: Optional[np.ndarray]  # (*S) float32
    foreground: Optional[np.ndarray]  # flat indices of foreground pixels (int64), lazily


def _as_tuple(size: Union[int, Sequence[int]], dims: int, what: str) -> tuple[int, ...]:
    if isinstance(size, (int, np.integer)):
        return (int(size),) * dims
    out = tuple(int(s) for s in size)
    if len(out) != dims:
        raise ValueError(f"{what} {out} has {len(out)} axes but the images are {dims}D")
    return out


class PatchDataset(Dataset):
    """Random (augmented) training patches from whole images.

    Items are dicts ``{"image": float32 (C, *P), "mask": int64 (*O), "weight": float32 (*O)}`` (``weight``
    only with ``weight_map``); ``P`` is ``patch_size`` and ``O`` is ``output_size`` (the centre of the
    patch a valid-padding network predicts; default ``P``). Item ``i`` comes from image
    ``i % len(samples)``; the randomness is seeded by ``(seed, epoch, i)`` (see :meth:`set_epoch`),
    so a run is reproducible whatever the number of loader workers. Images, labels and weight maps
    are read once and cached in memory per worker process: use ``persistent_workers=True`` so the
    caches survive from one epoch to the next. ``object_diameter``: resize each image so that its
    objects' median diameter is this many pixels (:mod:`unetkit.data.scale`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: ClassInfo,
        *,
        patch_size: Union[int, Sequence[int]],
        normalize: NormalizeConfig,
        augment: Optional[AugmentConfig] = None,
        target: str = "semantic",
        weight_map: Optional[BorderWeightConfig] = None,
        foreground_oversample: float = 0.0,
        seed: int = 0,
        patches_per_epoch: Optional[int] = None,
        output_size: Optional[Union[int, Sequence[int]]] = None,
        pages_as_channels: bool = False,
        object_diameter: Optional[float] = None,
    ) -> None:
        if not samples:
            raise DataError("no training samples; check the dataset folder")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if not 0.0 <= foreground_oversample <= 1.0:
            raise ValueError(f"foreground_oversample is a probability, got {foreground_oversample}")
        unlabelled = [s.image for s in samples if not s.labelled]
        if unlabelled:
            raise DataError(f"{unlabelled[0]}: no mask for this training image; add it or remove the image")
        self.samples = list(samples)
        self.classes = classes
        self.normalize = normalize
        self.target = target
        self.weight_map = weight_map
        self.foreground_oversample = foreground_oversample
        self.seed = seed
        # In shared memory so that persistent DataLoader workers see set_epoch() too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.patches_per_epoch = patches_per_epoch
        self.pages_as_channels = pages_as_channels
        if object_diameter is not None and object_diameter <= 0:
            raise ValueError(f"object_diameter must be a positive number of pixels, got {object_diameter}")
        self.object_diameter = object_diameter
        first = read_image(self.samples[0].image, pages_as_channels=pages_as_channels)
        self.dims = first.ndim - 1
        self.in_channels = first.shape[0]
        self.patch_size = _as_tuple(patch_size, self.dims, "patch_size")
        self.output_size = (
            self.patch_size if output_size is None else _as_tuple(output_size, self.dims, "output_size")
        )
        if any(o > p or (p - o) % 2 for p, o in zip(self.patch_size, self.output_size)):
            raise ValueError(
                f"output_size {self.output_size} must be centred inside patch_size {self.patch_size}"
            )
        self.augmenter = Augmenter(augment, self.dims)
        self._cache: dict[int, _Cached] = {}

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw different patches in each epoch; call it before iterating the DataLoader for that epoch
        (loader workers, persistent or not, see the new value)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.patches_per_epoch if self.patches_per_epoch is not None else len(self.samples)

    def _load(self, index: int) -> _Cached:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        sample = self.samples[index]
        image = read_image(sample.image, pages_as_channels=self.pages_as_channels)
        if image.ndim - 1 != self.dims or image.shape[0] != self.in_channels:
            raise DataError(
                f"{sample.image}: shape {image.shape} does not match the first image "
                f"({self.in_channels} channels, {self.dims}D); run `unetkit check-data`"
            )
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            raise DataError(f"{sample.image}: NaN/inf values; replace them or re-export the image")
        labels = load_labels(sample, self.classes, image.shape[1:])
        instances = None
        if self.target == "three_class" or self.weight_map is not None or self.object_diameter:
            instances = load_instances(sample, labels, self.classes)
        if self.object_diameter:
            factor = scale_factor(median_object_diameter(instances), self.object_diameter)
            shape = scaled_shape(labels.shape, factor)
            image = resize_spatial(image, shape, labels=False)
            labels = resize_spatial(labels, shape, labels=True)
            instances = resize_spatial(instances, shape, labels=True)
        if self.target == "three_class":
            ignored = labels == self.classes.ignore_index if self.classes.ignore_index is not None else None
            labels = three_class_from_instances(instances).astype(np.int64)
            if ignored is not None:
                labels[ignored] = self.classes.ignore_index
        weight = None
        if self.weight_map is not None:
            weight = border_weight_map(
                instances, self.weight_map.w0, self.weight_map.sigma, self.weight_map.class_weights,
                class_labels=labels, ignore_index=self.classes.ignore_index,
            )
        offset, scale = normalization_params(image, self.normalize)
        fits16 = labels.min(initial=0) >= -(1 << 15) and labels.max(initial=0) < 1 << 15
        small = np.int16 if fits16 else np.int32
        cached = _Cached(image, offset, scale, labels.astype(small), weight, None)
        self._cache[index] = cached
        return cached

    def _origin(self, rng: np.random.Generator, cached: _Cached) -> np.ndarray:
        spatial = np.array(cached.labels.shape)
        out = np.array(self.output_size)
        margin = (np.array(self.patch_size) - out) // 2
        top = spatial - out  # highest output-window origin inside the image (negative: image smaller)
        if self.foreground_oversample > 0 and rng.random() < self.foreground_oversample:
            if cached.foreground is None:
                valid = (cached.labels > 0) & (cached.labels != (self.classes.ignore_index or 0))
                cached.foreground = np.flatnonzero(valid)
            if cached.foreground.size:
                point = np.array(np.unravel_index(rng.choice(cached.foreground), spatial))
                jitter = rng.integers(-(out // 4), out // 4 + 1)
                start = np.clip(point - out // 2 + jitter, np.minimum(top, 0), np.maximum(top, 0))
                return start - margin
        start = np.where(top >= 0, [rng.integers(0, t + 1) if t >= 0 else 0 for t in top], top // 2)
        return start - margin

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        cached = self._load(index % len(self.samples))
        origin = self._origin(rng, cached)
        draw = self.augmenter.draw_spatial(rng, self.patch_size)
        weights = [cached.weight] if cached.weight is not None else []
        image, labels, weights = self.augmenter.extract(
            draw, origin, self.patch_size, cached.image, [cached.labels], weights, self.output_size
        )
        image = self.augmenter.apply_intensity(rng, apply_normalization(image, cached.offset, cached.scale))
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "mask": torch.from_numpy(labels[0].astype(np.int64)),
        }
        if weights:
            item["weight"] = torch.from_numpy(np.ascontiguousarray(weights[0], dtype=np.float32))
        return item
