"""Reading images and label images from disk, channel-first.

2D formats (PNG, JPEG, BMP, TIFF) are read with Pillow or tifffile, 3D volumes (TIFF stacks, NIfTI)
with tifffile or nibabel. Every reader error becomes a :class:`DataError` whose message names the
file and says how to fix it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: The Pillow formats :func:`decode_picture` opens (formats needing outside programs, e.g. EPS, are not).
PICTURE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")

# TIFF axis letters (tifffile's series.axes) that mean "channel" rather than "space" or "stack".
_CHANNEL_AXES = "CS"
#: Most bytes a TIFF or NIfTI file may claim once decoded: a bigger header is refused before anything
#: is allocated (damaged and hostile files claim sizes like this). Pillow formats have Pillow's own
#: limit (``PIL.Image.MAX_IMAGE_PIXELS``); 2D TIFFs bigger than memory are streamed by ``predict``.
MAX_DECODED_BYTES = 8 * 2**30


class DataError(ValueError):
    """A problem with the user's data; the message names the file and the fix."""


def failure_message(path: PathLike, exc: BaseException) -> str:
    """One line saying why ``path`` failed, naming the file once (the batch commands' per-file report).

    Errors other than ``ValueError`` (:class:`DataError` is one) and ``OSError`` keep their type name
    in the message, so that an unexpected failure is not mistaken for a problem with the data.
    """
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, (ValueError, OSError)):
        text = f"{type(exc).__name__}: {text}"
    return text if str(path) in text else f"{path}: {text}"


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


def check_claimed_size(path: PathLike, shape: Sequence[int], dtype: np.dtype) -> None:
    """Raise :class:`DataError` when a header claims more than :data:`MAX_DECODED_BYTES` decoded."""
    nbytes = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize
    if nbytes > MAX_DECODED_BYTES:
        raise DataError(
            f"{path}: the header claims {'x'.join(map(str, shape))} values "
            f"({nbytes / 2**30:.1f} GiB decoded), more than the {MAX_DECODED_BYTES / 2**30:.0f} GiB read "
            "at once; if the file is damaged re-export it, if it is real split it into smaller images"
        )


def check_finite(array: np.ndarray, path: PathLike) -> np.ndarray:
    """``array`` (pixels read from ``path``), or :class:`DataError` when it holds NaN or infinite values."""
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        raise DataError(f"{path}: NaN/inf values; replace them (e.g. with 0) or re-export the image")
    return array


def check_tiff_segments(path: PathLike, pages: Sequence, file_size: int) -> None:
    """Raise :class:`DataError` when a strip or tile of ``pages`` (tifffile pages) ends past the file
    (empty segments, read as zeros, are not checked)."""
    for page in pages:
        if page is None:
            continue
        end = max((o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c), default=0)
        if end > file_size:
            raise DataError(
                f"{path}: the file is truncated (its pixel data runs to byte {end}, the file has "
                f"{file_size}); re-export or re-copy it"
            )


def is_volume_path(path: PathLike) -> bool:
    """True for NIfTI files and TIFF files holding a 3D stack (several pages that are not channels)."""
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES:
        return False
    try:
        axes, shape = _tiff_axes(Path(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data error
        raise _read_error(Path(path), exc) from exc
    depth = [n for a, n in zip(axes, shape) if a not in _CHANNEL_AXES][:-2]
    return len(depth) >= 1 and math.prod(depth) > 1  # one page of (1, H, W) is a 2D image


def _spatial_axes(axes: str) -> str:
    return "".join(a for a in axes if a not in _CHANNEL_AXES)


def _read_error(path: Path, exc: BaseException) -> DataError:
    from PIL import Image

    if not path.exists():
        return DataError(f"{path}: file not found; check the path")
    if path.stat().st_size == 0:
        return DataError(f"{path}: the file is empty (0 bytes); re-export or re-copy it")
    text = str(exc) or type(exc).__name__
    if isinstance(exc, Image.DecompressionBombError):
        return DataError(f"{path}: the header claims more pixels than are read at once ({text}); "
                         "if the file is damaged re-export it, if it is real split it into smaller images")
    if isinstance(exc, MemoryError):
        return DataError(f"{path}: not enough memory to read it ({text}); split it into smaller images")
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
        return _pil_pixels(im, palette_to_rgb=palette_to_rgb)


def _pil_pixels(im: Image.Image, *, palette_to_rgb: bool) -> np.ndarray:
    """The decoded pixels of an image Pillow has opened, as :func:`_read_pil` gives them."""
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


def decode_picture(source: Union[Path, BinaryIO, Image.Image]) -> np.ndarray:
    """A PNG/JPEG/BMP/TIFF picture as displayed: channels last, palettes as colours, a fully opaque
    alpha channel dropped. ``(H, W)`` or ``(H, W, C)``.

    ``source``: a path or an open binary stream, opened as one of :data:`PICTURE_FORMATS` (never
    another Pillow format), or an image Pillow has opened, decoded as opened (a caller that checked
    its header decodes exactly what it checked).
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        return _drop_opaque_alpha(_pil_pixels(source, palette_to_rgb=True))
    with Image.open(source, formats=PICTURE_FORMATS) as picture:
        return decode_picture(picture)


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        check_claimed_size(path, series.shape, series.dtype)
        check_tiff_segments(path, series.pages, tif.filehandle.size)
        return series.asarray(), series.axes


def _read_nifti(path: Path) -> np.ndarray:
    """NIfTI data reordered from (X, Y, Z[, C]) to (Z, Y, X[, C])."""
    import nibabel

    volume = nibabel.load(str(path))
    check_claimed_size(path, volume.header.get_data_shape(), volume.header.get_data_dtype())
    data = np.asanyarray(volume.dataobj)
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
    elif spatial == 3 and array.shape[1] == 1:
        array = array[:, 0]  # a stack of one page, e.g. a (1, H, W) array saved as is: a 2D image
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
            if array.size and np.abs(array).max() >= 2**31:
                raise DataError(f"{path}: the label image has values of 2**31 or more; write integer labels "
                                "(class or object ids)")
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
