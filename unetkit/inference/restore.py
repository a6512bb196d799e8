"""A restoration network applied to an image: normalise, (upscale,) predict tile by tile, map back.

The output is on the input's intensity scale: the input's normalisation (offset, scale per channel)
is inverted on the network's output. A super-resolution network (``scale > 1``) sees the bicubic
upscale of the input, as it was trained. An RGB image given to a grey-level network is restored as
the field does it: the luminance (Y of ITU-R BT.601) goes through the network, the chroma is
bicubic-upscaled (super-resolution) or kept (denoising).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from ..data.degrade import rgb_to_ycbcr, upscale, ycbcr_to_rgb
from ..data.io import DataError, check_finite, stem_of, suffix_of
from ..data.normalize import apply_normalization, normalization_params
from ..data.pairs import read_checked_image
from ..utils.atomic import atomic_path

if TYPE_CHECKING:
    from .predictor import Predictor

LUMINANCE_NOTE = "RGB image, grey-level model: restored the luminance (Y, BT.601); chroma by bicubic"


def uses_luminance(predictor: Predictor, image: np.ndarray) -> bool:
    """Whether a channel-first ``image`` goes through :func:`restore_array`'s luminance route."""
    return predictor.dims == 2 and image.shape[0] in (3, 4) and predictor.in_channels == 1


def restore_array(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    """``(*S)`` or ``(C, *S)`` -> float32 ``(C, *S * scale)`` on the input's intensity scale (module doc)."""
    image = np.asarray(image)
    if image.ndim == predictor.dims:
        image = image[None]
    if image.ndim == predictor.dims + 1 and uses_luminance(predictor, image):
        ycc = rgb_to_ycbcr(image[:3].astype(np.float32))
        y = _restore_channels(predictor, ycc[:1])
        chroma = upscale(ycc[1:], predictor.scale) if predictor.scale > 1 else ycc[1:]
        return ycbcr_to_rgb(np.concatenate([y, chroma])).astype(np.float32)
    return _restore_channels(predictor, predictor.as_channels_first(image))


def _restore_channels(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32)
    if predictor.normalize is not None:
        offset, scale = normalization_params(x, predictor.normalize)
    else:
        offset, scale = np.zeros(x.shape[0], np.float32), np.ones(x.shape[0], np.float32)
    if predictor.scale > 1:
        if predictor.dims != 2:
            raise ValueError("super-resolution takes 2D images")
        x = upscale(x, predictor.scale)
    out = predictor._predict_normalized(apply_normalization(x, offset, scale))
    shape = (-1,) + (1,) * (out.ndim - 1)
    return out * scale.reshape(shape) + offset.reshape(shape)


def to_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A restored float image in ``dtype``: integers rounded and clipped to the dtype's range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return image > 0.5
    return image.astype(np.float32, copy=False)


def restored_path(out_dir: Path, src: Path, dtype: np.dtype, dims: int, float_output: bool) -> Path:
    """``out_dir/<stem>.png`` for 2D 8/16-bit images read from PNG/JPEG/BMP; ``.tif`` otherwise."""
    png = (not float_output and dims == 2 and np.dtype(dtype).kind in "ub" and np.dtype(dtype).itemsize <= 2
           and suffix_of(src) in (".png", ".jpg", ".jpeg", ".bmp"))
    return out_dir / f"{stem_of(src)}{'.png' if png else '.tif'}"


def save_restored(path: Path, image: np.ndarray) -> Path:
    """Write ``(C, *S)`` (any dtype): PNG for 2D 1/3-channel 8/16-bit, TIFF otherwise; atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if suffix_of(path) == ".png":
            from PIL import Image

            data = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
            if not (data.dtype == np.uint16 and data.ndim == 2):  # 16-bit grey stays I;16
                data = data.astype(np.uint8, copy=False)
            Image.fromarray(data).save(tmp, format="PNG")
        else:
            import tifffile

            if image.ndim == 3 and image.shape[0] == 3:  # colour: one RGB page
                tifffile.imwrite(tmp, np.moveaxis(image, 0, -1), photometric="rgb", compression="zlib")
            else:
                data = image[0] if image.shape[0] == 1 else image
                axes = {2: "YX", 3: "CYX" if image.shape[0] > 1 else "ZYX", 4: "CZYX"}[data.ndim]
                tifffile.imwrite(tmp, data, metadata={"axes": axes}, photometric="minisblack",
                                 planarconfig="separate" if data.ndim > 2 else None, compression="zlib")
    return path


def streams_restoration(predictor: Predictor, src: Path) -> bool:
    """Whether :func:`restore_file` streams ``src``: a big 2D TIFF (more than ``STREAM_PIXELS``) that a
    denoising or paired network (scale 1) takes as it is."""
    from .files import STREAM_PIXELS
    from .streaming import TiffSource, is_streamable_tiff

    if predictor.dims != 2 or predictor.scale != 1 or suffix_of(src) not in (".tif", ".tiff"):
        return False
    if not is_streamable_tiff(src):
        return False
    with TiffSource(src) as source:
        return source.shape[0] == predictor.in_channels and source.shape[1] * source.shape[2] > STREAM_PIXELS


def restore_streamed(predictor: Predictor, src: Path, dst: Path, float_output: bool) -> Path:
    """Restore a big 2D TIFF tile by tile into the tiled TIFF ``dst``: memory follows a band of tiles,
    not the image. The normalisation comes from a subsample of the image (fixed ranges need none)."""
    from .streaming import TiffSource, rebuffer_bands, write_tiled_tiff

    with TiffSource(src, predictor.segment_cache_bytes()) as source:
        channels, height, width = source.shape
        sample = source.read((0, 0), (1, 1)) if predictor.normalize.mode == "fixed" else source.subsample()
        offset, scale = normalization_params(sample, predictor.normalize)
        shape = (-1, 1, 1)
        dtype = np.dtype(np.float32) if float_output else source.dtype

        def bands():
            blocks = predictor.iter_proba(
                source, lambda box: apply_normalization(check_finite(box, src), offset, scale)
            )
            for band in rebuffer_bands(blocks, height):
                restored = to_dtype(band * scale.reshape(shape) + offset.reshape(shape), dtype)
                yield restored[0] if channels == 1 else np.moveaxis(restored, 0, -1)

        return write_tiled_tiff(
            dst, bands(), (height, width) if channels == 1 else (height, width, channels), dtype,
            photometric="rgb" if channels == 3 else "minisblack",
        )


def restore_file(
    predictor: Predictor,
    src: Union[str, Path],
    out_dir: Union[str, Path],
    *,
    float_output: bool = False,
    dst: Optional[Path] = None,
    channels: Optional[str] = None,
) -> tuple[Path, Optional[str]]:
    """Restore the image file ``src`` into ``out_dir`` (see :func:`restored_path`) in the input's dtype
    (``float_output``: float32 TIFF). ``channels``: ``"gray"`` or ``"rgb"`` converts the image first
    (:func:`~unetkit.inference.files.convert_channels`). Big 2D TIFFs are streamed
    (:func:`restore_streamed`). Returns the path written and a note (e.g. the luminance route)."""
    from .files import convert_channels

    src = Path(src)
    if channels is None and predictor.normalize is not None and streams_restoration(predictor, src):
        return restore_streamed(predictor, src, dst or Path(out_dir) / f"{stem_of(src)}.tif", float_output), (
            "streamed tile by tile (big TIFF)"
        )
    image = read_checked_image(src)
    if channels is not None:
        image = convert_channels(image, channels).astype(image.dtype, copy=False)
    if image.ndim - 1 != predictor.dims:
        raise DataError(f"{src}: a {image.ndim - 1}D image but the model is {predictor.dims}D")
    note = LUMINANCE_NOTE if uses_luminance(predictor, image) else None
    try:
        restored = restore_array(predictor, image)
    except ValueError as exc:
        raise DataError(f"{src}: {exc}") from exc
    dtype = np.float32 if float_output else image.dtype
    dst = dst or restored_path(Path(out_dir), src, dtype, predictor.dims, float_output)
    return save_restored(dst, to_dtype(restored, dtype)), note
