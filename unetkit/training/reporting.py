"""What a person looks at: ``metrics.csv``, ``curves.png``, image | truth | prediction overlays, reports."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..utils.atomic import atomic_path, atomic_write_text

GAP = 4  # white pixels between the panels of an overlay


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Rows of dicts as CSV (columns in first-seen order; floats with 6 significant digits), atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())
    return path


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def read_csv(path: Path) -> list[dict[str, Any]]:
    """``metrics.csv`` back as dicts of floats (ints where whole, text otherwise, empty = nan)."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: _parse(v) for k, v in row.items()})
    return rows


def _parse(text: str) -> Any:
    if text == "":
        return math.nan
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text else number


def save_curves(history: Sequence[dict[str, Any]], path: Path, metrics: Sequence[str] = ()) -> Optional[Path]:
    """``curves.png``: training loss (left) and validation metrics (right) per epoch."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h.get("loss", math.nan) for h in history], marker=".", label="train loss")
    ax_loss.set_xlabel("epoch")
    for ax in (ax_loss, ax_metric):
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_db = None
    for name in metrics:
        values = [h.get(name, math.nan) for h in history]
        if any(isinstance(v, (int, float)) and not math.isnan(v) for v in values):
            if name == "psnr":  # decibels: their own axis, beside the 0-1 scores
                ax_db = ax_db or ax_metric.twinx()
                ax_db.plot(epochs, values, marker=".", color="tab:red", label="val psnr (dB, right)")
                ax_db.set_ylabel("PSNR (dB)")
            else:
                ax_metric.plot(epochs, values, marker=".", label=f"val {name}")
    ax_metric.set_xlabel("epoch")
    if all(0.0 <= v <= 1.0 for line in ax_metric.lines for v in line.get_ydata() if v == v):
        ax_metric.set_ylim(0, 1)
    ax_metric.grid(alpha=0.3)
    lines = ax_metric.lines + (ax_db.lines if ax_db is not None else [])
    if lines:
        ax_metric.legend(lines, [line.get_label() for line in lines], loc="lower right")
    else:
        ax_metric.set_title("no validation set")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _display_image(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` float -> ``(H, W, 3)`` uint8, contrast-stretched 1-99 percentiles."""
    image = np.asarray(image, dtype=np.float32)
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    lo, hi = np.percentile(rgb, [1, 99])
    scaled = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
    return (scaled.transpose(1, 2, 0) * 255).astype(np.uint8)


def colorize(
    labels: np.ndarray, colors: Sequence[Sequence[int]], ignore_index: Optional[int] = None
) -> np.ndarray:
    """Class ids ``(H, W)`` -> ``(H, W, 3)`` uint8 colours (ignored pixels grey)."""
    table = np.array(list(colors) + [(128, 128, 128)], dtype=np.uint8)
    ids = np.asarray(labels).astype(np.int64)
    ids = np.where((ids < 0) | (ids >= len(colors)), len(colors), ids)
    if ignore_index is not None:
        ids = np.where(np.asarray(labels) == ignore_index, len(colors), ids)
    return table[ids]


#: Colours shown instead of grey class colours (a 0/255 mask's white would not show on a grey image).
HIGHLIGHTS = ((255, 70, 70), (70, 200, 255), (255, 200, 40), (120, 255, 120))


def display_colors(colors: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Class colours for overlays: grey ones (black, white...) swapped for :data:`HIGHLIGHTS`."""
    out, spare = [], iter(HIGHLIGHTS * (len(colors) // len(HIGHLIGHTS) + 1))
    for color in colors:
        out.append(tuple(next(spare)) if len(set(color)) == 1 else tuple(color))
    return out


def overlay_panels(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, classes: Any) -> np.ndarray:
    """image | truth | prediction as one ``(H, 3W + 2 GAP, 3)`` uint8 picture; the masks are blended
    over the image in the class colours (class 0 of a two-class problem is left untinted). 3D inputs
    ``(C, D, H, W)`` show their middle slice."""
    if truth.ndim == 3:
        mid = truth.shape[0] // 2
        image, truth, pred = image[:, mid], truth[mid], pred[mid]
    base = _display_image(image)
    panels = [base]
    colors = display_colors(classes.colors)
    for labels in (truth, pred):
        color = colorize(labels, colors, classes.ignore_index).astype(np.float32)
        blended = 0.45 * base + 0.55 * color
        if len(colors) == 2:
            blended = np.where((np.asarray(labels) == 0)[..., None], base, blended)
        panels.append(blended.astype(np.uint8))
    gap = np.full((base.shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def save_overlay(path: Path, image: np.ndarray, truth: np.ndarray, pred: np.ndarray, classes: Any) -> Path:
    """Write :func:`overlay_panels` as a PNG, atomically."""
    return save_picture(path, overlay_panels(image, truth, pred, classes))


def crop_panels(images: Sequence[np.ndarray], data_range: float, crop: int = 192) -> np.ndarray:
    """Side by side, the same centre crop (``crop`` px at the last image's resolution) of each
    ``(C, H, W)`` image (e.g. input | output | target), on ``0..data_range``, as ``(h, n*w + gaps, 3)``
    uint8. Smaller images (a super-resolution input) are shown enlarged with nearest pixels."""
    ref = images[-1].shape[-2:]
    size = (min(crop, ref[0]), min(crop, ref[1]))
    top, left = (ref[0] - size[0]) // 2, (ref[1] - size[1]) // 2
    panels = []
    for image in images:
        if image.ndim == 4:  # a volume: its middle slice
            image = image[:, image.shape[1] // 2]
        factor = ref[0] // image.shape[-2]
        if factor > 1:
            image = image.repeat(factor, axis=-2).repeat(factor, axis=-1)
        part = image[:3, top:top + size[0], left:left + size[1]].astype(np.float32)
        rgb = np.repeat(part, 3, axis=0) if part.shape[0] == 1 else part
        panels.append(np.clip(np.moveaxis(rgb, 0, -1) / data_range * 255, 0, 255).round().astype(np.uint8))
    gap = np.full((size[0], GAP, 3), 255, np.uint8)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    return np.concatenate(row, axis=1)


def save_picture(path: Path, picture: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` uint8 picture as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return path


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``columns`` (floats with 4 decimals)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def failed_section(failed: Sequence[str]) -> list[str]:
    """Markdown lines of a report listing the files that could not be scored (none: no lines)."""
    if not failed:
        return []
    return [f"## {len(failed)} file(s) not scored", "", *(f"- {line}" for line in failed), ""]
