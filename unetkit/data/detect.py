"""Detecting the classes of a dataset's masks: their encoding (0/255, ids, palette, RGB, instances)
and names, from the masks and an optional classes file."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .classes import ClassesFile, ClassInfo, default_colors, find_classes_file, read_classes_file
from .io import (
    DataError,
    is_volume_path,
    read_label_image,
    read_palette,
)
from .samples import Sample, dataset_root

PathLike = Union[str, "os.PathLike[str]"]

# A label image with more distinct values than this (or values above 255) holds instance ids.
MAX_CLASS_IDS = 64
# 0/255 masks whose other grey levels cover less than this fraction of pixels are binary255 with
# stray values (anti-aliasing, JPEG); more than that and the masks are not binary.
STRAY_FRACTION = 0.05


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


def classes_file_for(root: Optional[Path], classes_file: Optional[PathLike]) -> Optional[ClassesFile]:
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
        classes_file=classes_file_for(root_path, classes_file),
        ignore_index=ignore_index,
        encoding=encoding,
        has_instances=any(s.instances is not None for s in samples),
    )
    return classes
