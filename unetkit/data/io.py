"""Reading images and label images from disk, channel-first.

2D formats (PNG, JPEG, BMP, TIFF) are read with Pillow or tifffile, 3D volumes (TIFF stacks, NIfTI)
with tifffile or nibabel. Every reader error becomes a :class:`DataError` whose message names the
file and says how to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")

# TIFF axis letters (tifffile's series.axes) that mean "channel" rather than "space" or "stack".
_CHANNEL_AXES = "CS"


class DataError(ValueError):
    """A problem with the user's data; the message names the file and the fix."""


def suffix_of(path: PathLike) -> str:
    """The lower-case image suffix, keeping the double suffix of ``.nii.gz``."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def stem_of(path: PathLike) -> str:
    """The file name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    return name[: len(name) - len(suffix_of(path))] if suffix_of(path) else name


def is_image_path(path: PathLike) -> bool:
    return suffix_of(path) in IMAGE_SUFFIXES and not Path(path).name.startswith(".")


def list_images(folder: PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; give a folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))


def _tiff_axes(path: Path) -> tuple[str, tuple[int, ...]]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return series.axes, tuple(series.shape)


def is_volume_path(path: PathLike) -> bool:
    """True for NIfTI files and TIFF files holding a 3D stack (several pages that are not channels)."""
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES:
        return False
    try:
        axes, _ = _tiff_axes(Path(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data error
        raise _read_error(Path(path), exc) from exc
    return len(_spatial_axes(axes)) >= 3


def _spatial_axes(axes: str) -> str:
    return "".join(a for a in axes if a not in _CHANNEL_AXES)


def _read_error(path: Path, exc: BaseException) -> DataError:
    if not path.exists():
        return DataError(f"{path}: file not found; check the path")
    if path.stat().st_size == 0:
        return DataError(f"{path}: the file is empty (0 bytes); re-export or re-copy it")
    text = str(exc) or type(exc).__name__
    if "truncated" in text.replace(str(path), "").lower() or isinstance(exc, EOFError):
        return DataError(f"{path}: the file is truncated ({text}); re-export or re-copy it")
    return DataError(
        f"{path}: cannot be read as a {suffix_of(path) or 'image'} file ({text}); "
        "check that it is an image in a supported format "
        f"({', '.join(IMAGE_SUFFIXES)}) and re-export it if it is damaged"
    )


def _read_pil(path: Union[Path, BinaryIO], *, palette_to_rgb: bool) -> np.ndarray:
    """Pixels as stored, channels last; palette images give indices unless ``palette_to_rgb``."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode == "P" and palette_to_rgb:
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        return np.array(im)


def _drop_opaque_alpha(array: np.ndarray) -> np.ndarray:
    """Drop an alpha channel (last axis) that is fully opaque; keep it as data otherwise."""
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        alpha = array[..., -1]
        if alpha.size and alpha.min() == alpha.max() == np.iinfo(array.dtype).max:
            return array[..., :-1]
    return array


def decode_picture(source: Union[Path, BinaryIO]) -> np.ndarray:
    """A PNG/JPEG/BMP/TIFF picture (a path or an open binary stream) as displayed: channels last,
    palettes as colours, a fully opaque alpha channel dropped. ``(H, W)`` or ``(H, W, C)``."""
    return _drop_opaque_alpha(_read_pil(source, palette_to_rgb=True))


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return series.asarray(), series.axes


def _read_nifti(path: Path) -> np.ndarray:
    """NIfTI data reordered from (X, Y, Z[, C]) to (Z, Y, X[, C])."""
    import nibabel

    data = np.asanyarray(nibabel.load(str(path)).dataobj)
    if data.ndim < 2 or data.ndim > 4:
        raise DataError(f"{path}: NIfTI with {data.ndim} dimensions; expected 2D, 3D or 3D + channels")
    spatial = min(data.ndim, 3)
    order = tuple(reversed(range(spatial))) + tuple(range(spatial, data.ndim))
    return np.ascontiguousarray(np.transpose(data, order))


def _check_not_empty(array: np.ndarray, path: Path) -> np.ndarray:
    if array.size == 0:
        raise DataError(f"{path}: the image has no pixels (shape {array.shape}); remove it or re-export it")
    return array


def _read_guarded(path: PathLike, read: Callable[[Path, str], np.ndarray]) -> np.ndarray:
    """Run ``read(path, suffix)``, turning any reader failure into a :class:`DataError` naming the file."""
    path = Path(path)
    suffix = suffix_of(path)
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        array = read(path, suffix)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data error
        raise _read_error(path, exc) from exc
    return np.ascontiguousarray(_check_not_empty(array, path))


def read_image(path: PathLike, *, pages_as_channels: bool = False) -> np.ndarray:
    """Read an image channel-first: ``(C, H, W)`` for 2D, ``(C, D, H, W)`` for 3D volumes.

    The dtype is kept (uint8, uint16, float32, ...). A fully opaque alpha channel is dropped (PNG
    exports often carry one); palette images are converted to RGB. A multi-page TIFF is a 3D stack
    unless its metadata says the pages are channels, or ``pages_as_channels`` is set (multi-band
    rasters stored one band per page).
    """

    def read(path: Path, suffix: str) -> np.ndarray:
        if suffix in PIL_SUFFIXES:
            array = decode_picture(path)
            return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        if suffix in TIFF_SUFFIXES:
            return _tiff_to_channel_first(*_read_tiff(path), pages_as_channels=pages_as_channels)
        data = _read_nifti(path)
        return data[None] if data.ndim <= 3 else np.moveaxis(data, -1, 0)

    return _read_guarded(path, read)


def _tiff_to_channel_first(array: np.ndarray, axes: str, *, pages_as_channels: bool) -> np.ndarray:
    """Reorder a TIFF series with tifffile axis letters to ``(C, [D,] H, W)``."""
    channel_axes = [i for i, a in enumerate(axes) if a in _CHANNEL_AXES]
    other = [i for i in range(array.ndim) if i not in channel_axes]
    # Collapse every channel-like axis into one leading channel axis.
    array = np.transpose(array, channel_axes + other)
    n_channels = int(np.prod([array.shape[i] for i in range(len(channel_axes))], dtype=np.int64))
    array = array.reshape((n_channels,) + array.shape[len(channel_axes) :])
    spatial = array.ndim - 1
    if spatial > 3:
        # e.g. time + Z: fold the leading non-spatial axes into the channels.
        array = array.reshape((-1,) + array.shape[-3:])
        spatial = 3
    if pages_as_channels and spatial == 3:
        if array.shape[0] != 1:
            raise ValueError("pages_as_channels: the TIFF already has a channel axis")
        array = array[0]
    return array


def read_label_image(path: PathLike) -> np.ndarray:
    """Read a mask or instance image with its raw values.

    Returns ``(H, W)`` for 2D label images (palette PNGs give their palette indices), ``(H, W, 3)``
    for RGB colour masks (a fully opaque alpha channel is dropped) and ``(D, H, W)`` for 3D volumes.
    Float label images must hold whole numbers and are returned as int64.
    """

    def read(path: Path, suffix: str) -> np.ndarray:
        if suffix in PIL_SUFFIXES:
            array = _drop_opaque_alpha(_read_pil(path, palette_to_rgb=False))
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            if array.ndim == 3 and array.shape[-1] == 2:
                raise DataError(
                    f"{path}: the mask has a grey channel with partial transparency; "
                    "save masks without an alpha channel"
                )
        elif suffix in TIFF_SUFFIXES:
            array = _label_from_tiff(*_read_tiff(path), path)
        else:
            array = _read_nifti(path)
            if array.ndim == 4 and array.shape[-1] == 1:
                array = array[..., 0]
            if array.ndim == 4:
                raise DataError(f"{path}: the label volume has {array.shape[-1]} channels; expected one")
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(array)):
                raise DataError(f"{path}: the label image has NaN or infinite values; write integer labels")
            if np.any(array != np.round(array)):
                raise DataError(f"{path}: the label image has fractional values; write integer class ids")
            array = array.astype(np.int64)
        return array

    return _read_guarded(path, read)


def _label_from_tiff(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    if array.ndim == 3 and axes.endswith("S") and array.shape[-1] in (3, 4):
        return _drop_opaque_alpha(array)
    # Drop singleton axes other than the image plane (tifffile keeps e.g. a size-1 page axis).
    extra = tuple(i for i, (a, n) in enumerate(zip(axes, array.shape)) if n == 1 and a not in "YX")
    array = np.squeeze(array, axis=extra) if len(axes) == array.ndim else array
    if array.ndim in (2, 3):
        return array
    raise DataError(f"{path}: a label image must be 2D or 3D, got shape {array.shape}")


def read_palette(path: PathLike) -> Optional[list[tuple[int, int, int]]]:
    """The colour table of a palette (mode "P") PNG/BMP/TIFF, or ``None`` for other images."""
    path = Path(path)
    if suffix_of(path) not in PIL_SUFFIXES + TIFF_SUFFIXES:
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode != "P":
                return None
            raw = im.getpalette() or []
    except Exception:  # noqa: BLE001 - tifffile-only TIFFs have no Pillow palette
        return None
    return [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw) - 2, 3)]
