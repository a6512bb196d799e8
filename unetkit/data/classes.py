"""One description of the classes of a dataset: names, colours, ignore index and mask encoding.

It travels with the data (``classes.json`` in a run folder) so that predictions are written back in
the encoding of the training masks. Class ``i`` is the ``i``-th name; the encodings map raw mask
values to class ids as follows:

- ``binary01``: 0 -> 0, 1 -> 1;  ``binary255``: 0 -> 0, 255 -> 1;
- ``ids`` and ``palette``: the value (or palette index) is the class id;
- ``rgb``: the colour ``colors[i]`` is class ``i`` (``ignore_color`` is ignored);
- ``instances``: 0 is background, every object id is foreground (class 1).

A raw value equal to ``ignore_index`` (or the ``ignore_color`` of an RGB mask) decodes to
``ignore_index``: the loss and the metrics skip those pixels.
"""

from __future__ import annotations

import colorsys
import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..utils.atomic import atomic_path
from .io import DataError, suffix_of

PathLike = Union[str, "os.PathLike[str]"]
Color = tuple[int, int, int]

ENCODINGS = ("binary01", "binary255", "ids", "palette", "rgb", "instances")
CLASSES_FILE_NAMES = ("classes.json", "classes.csv", "classes.txt")

# Distinct colours for display; class 0 (usually background) is black.
_BASE_COLORS: list[Color] = [
    (0, 0, 0), (255, 255, 255), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
    (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]


def default_colors(n: int) -> list[Color]:
    """``n`` distinct display colours: a fixed table, then golden-ratio hues."""
    colors = list(_BASE_COLORS[:n])
    for i in range(len(colors), n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _pack(colors: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 colours -> one int64 key per colour."""
    c = colors.astype(np.int64)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


@dataclass
class InvalidValues:
    """Mask values that do not fit the encoding: which, how many pixels, and where the first one is."""

    values: list[Any]
    count: int
    example: tuple[int, ...]
    what: str  # "value" or "colour"

    def describe(self, encoding: str) -> str:
        shown = ", ".join(str(v) for v in self.values[:8]) + (" ..." if len(self.values) > 8 else "")
        return (
            f"{self.count} pixel(s) with {self.what}(s) {shown} that do not fit the {encoding!r} "
            f"encoding (first at position {self.example})"
        )


@dataclass
class ClassInfo:
    """Class names, display colours, ignore index and the mask encoding of a dataset."""

    names: list[str]
    colors: Optional[list[Color]] = None
    ignore_index: Optional[int] = None
    encoding: str = "ids"
    ignore_color: Optional[Color] = None
    _lut: Optional[np.ndarray] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown mask encoding {self.encoding!r}; use one of {', '.join(ENCODINGS)}")
        self.names = [str(n) for n in self.names]
        if self.colors is None:
            self.colors = default_colors(len(self.names))
        self.colors = [tuple(int(v) for v in c) for c in self.colors]  # type: ignore[misc]
        if len(self.colors) != len(self.names):
            raise ValueError(f"{len(self.names)} class names but {len(self.colors)} colours")
        if self.ignore_color is not None:
            self.ignore_color = tuple(int(v) for v in self.ignore_color)  # type: ignore[assignment]
            if self.ignore_index is None:
                self.ignore_index = 255
        if self.ignore_index is not None and 0 <= self.ignore_index < len(self.names):
            raise ValueError(
                f"ignore_index {self.ignore_index} is also class {self.names[self.ignore_index]!r}; "
                "the ignored value must not be a class id"
            )
        if self.encoding == "rgb" and len(set(self.colors)) != len(self.colors):
            raise ValueError("two classes share a colour in an RGB-encoded class table")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def binary(cls, encoding: str = "binary255", names: Sequence[str] = ("background", "foreground")):
        return cls(list(names), encoding=encoding)

    @classmethod
    def three_class(cls) -> ClassInfo:
        """Background / interior / border, the target for separating touching objects."""
        return cls(["background", "interior", "border"], [(0, 0, 0), (255, 255, 255), (230, 25, 75)])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "names": list(self.names),
            "colors": [list(c) for c in (self.colors or [])],
            "ignore_index": self.ignore_index,
            "encoding": self.encoding,
        }
        if self.ignore_color is not None:
            out["ignore_color"] = list(self.ignore_color)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassInfo:
        colors = data.get("colors")
        ignore_color = data.get("ignore_color")
        return cls(
            names=list(data["names"]),
            colors=[tuple(c) for c in colors] if colors else None,
            ignore_index=data.get("ignore_index"),
            encoding=data.get("encoding", "ids"),
            ignore_color=tuple(ignore_color) if ignore_color else None,
        )

    # -- decoding -----------------------------------------------------------------------------
    def _value_lut(self) -> np.ndarray:
        """Raw integer value -> class id for values below the table length, -1 where invalid."""
        if self._lut is not None:
            return self._lut
        size = max(256, self.num_classes, (self.ignore_index or 0) + 1)
        lut = np.full(size, -1, dtype=np.int64)
        if self.encoding == "binary01":
            lut[:2] = [0, 1]
        elif self.encoding == "binary255":
            lut[0], lut[255] = 0, 1
        else:
            lut[: self.num_classes] = np.arange(self.num_classes)
        if self.ignore_index is not None and self.ignore_index >= 0:
            lut[self.ignore_index] = self.ignore_index
        self._lut = lut
        return lut

    def decode_checked(self, raw: np.ndarray) -> tuple[np.ndarray, Optional[InvalidValues]]:
        """Like :meth:`decode` but returns ``(labels, invalid)``; invalid pixels are -1 in ``labels``."""
        raw = np.asarray(raw)
        if self.encoding == "rgb":
            return self._decode_rgb(raw)
        if raw.dtype.kind not in "uib":
            raise DataError(f"mask values must be integers, got dtype {raw.dtype}")
        if self.encoding == "instances":
            labels = (raw > 0).astype(np.int64)
            if self.ignore_index is not None:
                labels[raw == self.ignore_index] = self.ignore_index
            bad = raw < 0
        else:
            lut = self._value_lut()
            inside = (raw >= 0) & (raw < len(lut))
            labels = np.where(inside, lut[np.where(inside, raw, 0).astype(np.intp)], -1)
            bad = labels < 0
        if bad.any():
            return labels, self._invalid(raw, bad, "value")
        return labels, None

    def _decode_rgb(self, raw: np.ndarray) -> tuple[np.ndarray, Optional[InvalidValues]]:
        if raw.shape[-1] != 3:
            # A grey-valued mask with an RGB class table: accept greys r=g=b.
            raw = np.repeat(raw[..., None], 3, axis=-1)
        keys = _pack(raw)
        table = [(c, i) for i, c in enumerate(self.colors or [])]
        if self.ignore_color is not None and self.ignore_index is not None:
            table.append((self.ignore_color, self.ignore_index))
        table_keys = _pack(np.array([c for c, _ in table], dtype=np.uint8).reshape(-1, 3))
        order = np.argsort(table_keys)
        sorted_keys = table_keys[order]
        ids = np.array([i for _, i in table], dtype=np.int64)[order]
        pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
        found = sorted_keys[pos] == keys
        labels = np.where(found, ids[pos], -1)
        if not found.all():
            return labels, self._invalid(raw, ~found, "colour")
        return labels, None

    @staticmethod
    def _invalid(raw: np.ndarray, bad: np.ndarray, what: str) -> InvalidValues:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        if what == "colour":
            values = [tuple(int(v) for v in c) for c in np.unique(raw[bad].reshape(-1, 3), axis=0)]
        else:
            values = [int(v) for v in np.unique(raw[bad])]
        return InvalidValues(values=values, count=int(bad.sum()), example=first, what=what)

    def find_invalid(self, raw: np.ndarray) -> Optional[InvalidValues]:
        """Values (or colours) of a raw mask that do not fit this encoding, or ``None``."""
        return self.decode_checked(raw)[1]

    def decode(self, raw: np.ndarray, source: Optional[PathLike] = None) -> np.ndarray:
        """Raw mask values -> int64 class ids with the spatial shape (``(H, W)`` for RGB ``(H, W, 3)``).

        Ignored pixels are ``ignore_index``. Values that do not fit the encoding raise
        :class:`DataError` naming ``source`` (the mask file), the count and an example position.
        """
        labels, invalid = self.decode_checked(raw)
        if invalid is not None:
            where = f"{source}: " if source is not None else ""
            raise DataError(where + invalid.describe(self.encoding) + "; " + self.fix_hint(invalid))
        return labels

    def fix_hint(self, invalid: InvalidValues) -> str:
        """How to fix mask values that do not fit the encoding."""
        if self.encoding == "binary255":
            return (
                "the masks are 0/255 with stray grey levels (anti-aliasing or JPEG compression): "
                "threshold them at 128 or re-export them as PNG without anti-aliasing"
            )
        if self.encoding == "binary01":
            return "binary 0/1 masks must hold only 0 and 1; re-export them or set the encoding"
        if self.encoding == "rgb":
            return (
                "add the colour(s) to the classes file (name -> colour), mark one as ignored, "
                "or re-export the masks without anti-aliasing"
            )
        return (
            f"class ids must be 0..{self.num_classes - 1}"
            + (f" or {self.ignore_index} (ignored)" if self.ignore_index is not None else "")
            + "; add the missing classes to the classes file or set --ignore-index"
        )

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Class ids ``(*S)`` -> the array to write, in the encoding of the training masks.

        0/255 uint8 for ``binary255`` (and two-class ``instances``), palette indices for
        ``palette``, ``(*S, 3)`` uint8 colours for ``rgb``, ids (uint8, or uint16 above 255) otherwise.
        """
        labels = np.asarray(labels).astype(np.int64, copy=False)
        ignored = labels == (self.ignore_index if self.ignore_index is not None else -1)
        kept = labels[~ignored]
        if kept.size and (kept.min() < 0 or kept.max() >= max(self.num_classes, 2)):
            raise ValueError(f"labels outside 0..{self.num_classes - 1} cannot be encoded")
        if self.encoding == "rgb":
            table = np.array(list(self.colors or []) + [self.ignore_color or (0, 0, 0)], dtype=np.uint8)
            return table[np.where(ignored, len(table) - 1, labels)]
        if self.encoding == "binary255" or (self.encoding == "instances" and self.num_classes <= 2):
            out = np.where(ignored, self.ignore_index or 0, labels * 255)
            return out.astype(np.uint8)
        top = int(labels.max(initial=0))
        return labels.astype(np.uint8 if top < 256 else np.uint16)

    def save_mask(self, path: PathLike, labels: np.ndarray) -> Path:
        """Write class ids ``(H, W)`` or ``(D, H, W)`` as a mask file, atomically; returns the path written.

        PNG for 2D masks (a palette PNG carrying ``colors`` for the ``palette`` encoding); TIFF for 3D
        masks or ids above 255 (the suffix is changed to ``.tif`` if needed); NIfTI if ``path`` ends
        in ``.nii``/``.nii.gz``. JPEG is never used for masks (lossy), a ``.jpg`` path becomes ``.png``.
        """
        path = Path(path)
        data = self.encode(labels)
        spatial = data.ndim - (1 if self.encoding == "rgb" else 0)
        suffix = suffix_of(path)
        if suffix in (".nii", ".nii.gz"):
            return _save_nifti(path, data)
        if spatial == 3 or data.dtype == np.uint16:
            if suffix not in (".tif", ".tiff"):
                path = path.with_name(path.name[: len(path.name) - len(suffix)] + ".tif")
        elif suffix not in (".png", ".tif", ".tiff", ".bmp"):
            path = path.with_name(path.name[: len(path.name) - len(suffix)] + ".png")
        if suffix_of(path) in (".tif", ".tiff"):
            import tifffile

            with atomic_path(path) as tmp:
                photometric = "rgb" if self.encoding == "rgb" else "minisblack"
                tifffile.imwrite(tmp, data, compression="zlib", photometric=photometric)
            return path
        from PIL import Image

        if self.encoding == "palette":
            image = Image.fromarray(data.astype(np.uint8), mode="P")
            palette = [v for c in (self.colors or []) for v in c]
            image.putpalette(palette + [0] * (768 - len(palette)))
        else:
            image = Image.fromarray(data)
        with atomic_path(path) as tmp:
            image.save(tmp)
        return path


def _save_nifti(path: Path, data: np.ndarray) -> Path:
    import nibabel

    spatial = min(data.ndim, 3)
    order = tuple(reversed(range(spatial))) + tuple(range(spatial, data.ndim))
    image = nibabel.Nifti1Image(np.transpose(data, order), affine=np.eye(4))
    with atomic_path(path) as tmp:
        nibabel.save(image, str(tmp))
    return path


# -- classes files ------------------------------------------------------------------------------
@dataclass
class ClassesFile:
    """What a user's classes file says; fields it does not set are ``None``."""

    path: Path
    names: Optional[list[str]] = None
    colors: Optional[list[Color]] = None
    ignore_index: Optional[int] = None
    ignore_color: Optional[Color] = None
    encoding: Optional[str] = None


def find_classes_file(root: PathLike) -> Optional[Path]:
    """``classes.json``, ``classes.csv`` or ``classes.txt`` in ``root``, if there is one."""
    for name in CLASSES_FILE_NAMES:
        candidate = Path(root) / name
        if candidate.is_file():
            return candidate
    return None


def _color(value: Any, path: Path, name: str) -> Color:
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
        value = [v for v in text.replace(",", " ").split()]
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: colour of class {name!r} is not 3 integers: {value!r}") from exc
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise DataError(f"{path}: colour of class {name!r} must be 3 integers 0-255, got {value!r}")
    return rgb  # type: ignore[return-value]


def _entries_to_file(path: Path, entries: list[dict[str, Any]], extra: dict[str, Any]) -> ClassesFile:
    """Class entries ``{"name", "color"?, "id"?, "ignore"?}`` -> a ClassesFile."""
    for position, entry in enumerate(entries):
        if entry.get("id") is not None and int(entry["id"]) != position and not entry.get("ignore"):
            raise DataError(
                f"{path}: class {entry['name']!r} has id {entry['id']} but is entry {position}; "
                "list the classes in id order 0, 1, 2, ... (ids must be contiguous)"
            )
    kept = [e for e in entries if not e.get("ignore")]
    ignored = [e for e in entries if e.get("ignore")]
    if len(ignored) > 1:
        raise DataError(f"{path}: more than one class is marked as ignored; keep one")
    result = ClassesFile(path=path, names=[str(e["name"]) for e in kept])
    has_colors = [e.get("color") is not None for e in entries]
    if any(has_colors):
        if not all(has_colors):
            raise DataError(f"{path}: give a colour for every class or for none")
        result.colors = [_color(e["color"], path, e["name"]) for e in kept]
    if ignored:
        entry = ignored[0]
        result.ignore_index = int(entry["id"]) if entry.get("id") is not None else len(kept)
        if entry.get("color") is not None:
            result.ignore_color = _color(entry["color"], path, entry["name"])
    if extra.get("ignore_index") is not None:
        result.ignore_index = int(extra["ignore_index"])
    if extra.get("ignore_color") is not None:
        result.ignore_color = _color(extra["ignore_color"], path, "ignore")
    if extra.get("encoding") is not None:
        if extra["encoding"] not in ENCODINGS:
            raise DataError(
                f"{path}: unknown encoding {extra['encoding']!r}; use one of {', '.join(ENCODINGS)}"
            )
        result.encoding = str(extra["encoding"])
    return result


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y", "ignore", "x")


def read_classes_file(path: PathLike) -> ClassesFile:
    """Parse a classes file.

    - JSON: ``{"name": [r, g, b], ...}``; or ``{"classes": ..., "encoding": ..., "ignore_index": ...,
      "ignore": "void"}`` where ``classes`` is such a mapping, a list of names, or a list of
      ``{"name", "color", "id", "ignore"}``; or a saved ``ClassInfo`` (``names``/``colors``).
    - CSV: a row per class, columns ``name`` and optional ``id``, ``r``, ``g``, ``b`` (or ``color``)
      and ``ignore``; without a header the columns are ``name[,r,g,b]`` or ``id,name[,r,g,b]``.
    - TXT: a line per class, ``name [r g b] [ignore]``.

    The class marked ignored is not a class: its pixels are skipped (``ignore_index``, by default
    its id or the position after the last class).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the classes file ({exc}); write it as UTF-8 text") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return _parse_json(path, json.loads(text))
        if suffix == ".csv":
            return _parse_csv(path, text)
        return _parse_txt(path, text)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(
            f"{path}: cannot parse the classes file ({exc}); see docs/data.md (Mask encodings) for its format"
        ) from exc


def _parse_json(path: Path, data: Any) -> ClassesFile:
    if isinstance(data, dict) and "names" in data:
        info = ClassInfo.from_dict(data)
        return ClassesFile(path, info.names, info.colors if data.get("colors") else None,
                           info.ignore_index, info.ignore_color, data.get("encoding"))
    if isinstance(data, dict) and "classes" in data:
        classes, extra = data["classes"], data
    elif isinstance(data, dict):
        classes, extra = data, {}
    else:
        classes, extra = data, {}
    ignore_name = extra.get("ignore") if isinstance(extra.get("ignore"), str) else None
    if isinstance(classes, dict):
        entries = [{"name": k, "color": v} for k, v in classes.items()]
    else:
        entries = [c if isinstance(c, dict) else {"name": c} for c in classes]
    for entry in entries:
        if ignore_name is not None and entry["name"] == ignore_name:
            entry["ignore"] = True
    return _entries_to_file(path, entries, extra)


def _parse_csv(path: Path, text: str) -> ClassesFile:
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]]
    entries = []
    if "name" in header:
        for row in rows[1:]:
            rec = dict(zip(header, (c.strip() for c in row)))
            entry: dict[str, Any] = {"name": rec["name"]}
            if rec.get("id"):
                entry["id"] = int(rec["id"])
            if rec.get("color"):
                entry["color"] = rec["color"]
            elif all(rec.get(k) for k in ("r", "g", "b")):
                entry["color"] = (rec["r"], rec["g"], rec["b"])
            if rec.get("ignore"):
                entry["ignore"] = _truthy(rec["ignore"])
            entries.append(entry)
    else:
        for row in rows:
            cells = [c.strip() for c in row]
            entries.append(_positional_entry(cells))
    return _entries_to_file(path, entries, {})


def _positional_entry(cells: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if cells and cells[-1].lower() == "ignore":
        entry["ignore"] = True
        cells = cells[:-1]
    if len(cells) in (2, 5) and cells[0].lstrip("-").isdigit():
        entry["id"] = int(cells[0])
        cells = cells[1:]
    entry["name"] = cells[0]
    if len(cells) == 4:
        entry["color"] = cells[1:4]
    elif len(cells) != 1:
        raise ValueError(f"expected 'name [r g b] [ignore]', got {' '.join(cells)!r}")
    return entry


def _parse_txt(path: Path, text: str) -> ClassesFile:
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    entries = [_positional_entry(ln.replace(",", " ").split()) for ln in lines if ln]
    return _entries_to_file(path, entries, {})
