"""``unetkit check-data``: every problem of a dataset folder at once, before any time is spent."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .classes import ClassInfo
from .detect import MaskSummary, classes_file_for, classes_from_summaries, summarize_mask
from .io import (
    DataError,
    read_image,
    read_label_image,
)
from .samples import Sample, dataset_root, scan_dataset

PathLike = Union[str, "os.PathLike[str]"]


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
    #: ``(channels, dimensions)`` of each image read, to name the ones that differ from most.
    kinds: dict[Path, tuple[int, int]] = field(default_factory=dict)
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
    report.kinds[sample.image] = (image.shape[0], len(spatial))
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


def _report_odd_kinds(report: CheckReport) -> None:
    """Name each image whose channel count or dimension differs from most images' (one problem per file)."""
    channels = report.channels.most_common(1)[0][0] if report.channels else None
    dims = report.dims.most_common(1)[0][0] if report.dims else None
    for path, (c, d) in report.kinds.items():
        if d != dims:
            report.problems.append(
                f"{path}: a {d}D image, but {report.dims[dims]} image(s) are {dims}D "
                f"({_fmt_counter(report.dims, lambda n: f'{n}D')}); keep one kind per dataset"
            )
        elif c != channels:
            report.problems.append(
                f"{path}: {c} channel(s), but {report.channels[channels]} image(s) have {channels} "
                f"(images have different numbers of channels: {_fmt_counter(report.channels)}); convert them "
                "all to the same (e.g. all greyscale or all RGB)"
            )


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
    _report_odd_kinds(report)
    if not summaries and not report.n_instances:
        return report
    try:
        cf = classes_file_for(dataset_root(samples) if not root.is_dir() else root, classes_file)
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
