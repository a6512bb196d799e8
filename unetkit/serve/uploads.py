"""Uploaded bytes -> a channel-first image, refusing what would hurt the server.

The bytes are opened once, as one of PNG/JPEG/TIFF/BMP only, and that one opened image is checked,
then decoded. Checks, in order: the byte size, that the format is one of those, the pixel count and
the longest side from the header alone (a decompression bomb is refused before it is decoded; a
super-resolution upload is also refused when its scale-times-larger output would be over the
limits), one frame only, then the full decode (a truncated file fails here), whose shape is checked
against the limits again. Nothing is written to disk.
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..data.io import PICTURE_FORMATS, decode_picture

MB = 1024 * 1024
FORMATS_HINT = "PNG, JPEG, TIFF or BMP"


@dataclass
class Limits:
    """What one upload may be: bytes, pixels (width x height) and the longest side."""

    max_bytes: int = 50 * MB
    max_pixels: int = 40_000_000
    max_side: int = 20_000

    def to_dict(self) -> dict[str, int]:
        return {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels, "max_side": self.max_side}


class UploadError(ValueError):
    """A bad upload: ``status`` is the HTTP status (4xx), the message says what is wrong and the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def pillow_errors(message: str) -> Iterator[None]:
    """Turn Pillow's failures inside the block into :class:`UploadError`: an unknown format 415, a
    decompression bomb (Pillow's error, or its warning) 413, anything else unreadable 400 with
    ``message`` (``{exc}`` in it becomes Pillow's reason)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except UnidentifiedImageError:
        raise UploadError(415, f"the file is not an image this server reads: upload {FORMATS_HINT}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(
            413, "the image has more pixels than the server decodes (decompression bomb check): "
            "upload a smaller image"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UploadError(400, message.format(exc=exc)) from None


def decode_upload(data: bytes, limits: Limits, output_scale: int = 1) -> np.ndarray:
    """Decode an uploaded 2D image to ``(C, H, W)`` (dtype kept; palette -> RGB; opaque alpha dropped).

    ``output_scale``: the answer is that many times larger along each axis (super-resolution); its
    size ``(H * output_scale, W * output_scale)`` must be within ``limits`` too. The limits are checked on
    the header, then on the decoded image.
    """
    from PIL import Image

    if not data:
        raise UploadError(400, "the uploaded file is empty: upload an image file in the field 'file'")
    if len(data) > limits.max_bytes:
        raise UploadError(
            413, f"the file is {len(data) / MB:.1f} MB, over the server's limit of "
            f"{limits.max_bytes / MB:.1f} MB: upload a smaller image (or serve with a larger --max-mb)"
        )
    with pillow_errors("the image header cannot be read ({exc}): re-export the image"):
        picture = Image.open(io.BytesIO(data), formats=PICTURE_FORMATS)
        frames = getattr(picture, "n_frames", 1)
    with picture:
        check_size(*picture.size, limits, output_scale)
        if frames != 1:
            raise UploadError(
                422, f"the file holds {frames} frames or pages; the server segments single 2D images: upload "
                "one page (use `unetkit predict` for stacks and volumes)"
            )
        with pillow_errors("the image is truncated or damaged ({exc}): upload the complete file"):
            array = decode_picture(picture)
    check_size(array.shape[1], array.shape[0], limits, output_scale)
    return np.ascontiguousarray(array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0))


def check_size(width: int, height: int, limits: Limits, output_scale: int = 1) -> None:
    """Raise a 413 :class:`UploadError` if ``width x height``, or its ``output_scale`` x super-resolved
    output, is over the pixel or side limit."""
    check_dimensions(width, height, limits)
    if output_scale > 1:
        check_output_dimensions(width, height, output_scale, limits)


def check_dimensions(width: int, height: int, limits: Limits) -> None:
    """Raise a 413 :class:`UploadError` if ``width x height`` is over the pixel or side limit."""
    if width < 1 or height < 1:
        raise UploadError(400, f"the image is {width} x {height} pixels: upload an image with pixels")
    if max(width, height) > limits.max_side:
        raise UploadError(
            413, f"the image is {width} x {height} pixels; the longest side may be {limits.max_side}: "
            "crop or downscale it (or use `unetkit predict`, which streams big files)"
        )
    if width * height > limits.max_pixels:
        raise UploadError(
            413, f"the image has {width * height:,} pixels ({width} x {height}), over the server's limit of "
            f"{limits.max_pixels:,}: crop or downscale it (or use `unetkit predict`, which streams big files)"
        )


def check_output_dimensions(width: int, height: int, scale: int, limits: Limits) -> None:
    """Raise a 413 :class:`UploadError` if the ``scale`` x super-resolved ``width x height`` image would be
    over the pixel or side limit."""
    out_w, out_h = width * scale, height * scale
    if max(out_w, out_h) <= limits.max_side and out_w * out_h <= limits.max_pixels:
        return
    raise UploadError(
        413, f"the image is {width} x {height} pixels; its x{scale} super-resolution would be "
        f"{out_w} x {out_h} ({out_w * out_h:,} pixels), over the server's limit of {limits.max_pixels:,} "
        f"pixels and {limits.max_side} per side: upload at most {limits.max_pixels // scale**2:,} pixels and "
        f"{limits.max_side // scale} per side (or restore it with `unetkit predict`)"
    )


def match_channels(image: np.ndarray, expected: int) -> np.ndarray:
    """Give ``(C, H, W)`` the model's channel count, or raise a 422 :class:`UploadError`.

    The one conversion made is lossless: an RGB image whose three channels are equal (a grey
    image saved as RGB) becomes one channel for a one-channel model.
    """
    channels = image.shape[0]
    if channels == expected:
        return image
    grey_as_rgb = channels == 3 and np.array_equal(image[0], image[1]) and np.array_equal(image[0], image[2])
    if expected == 1 and grey_as_rgb:
        return image[:1]
    names = {1: "grayscale", 2: "grayscale + alpha", 3: "RGB", 4: "RGBA"}
    raise UploadError(
        422, f"the image has {channels} channel(s) ({names.get(channels, 'multi-channel')}) but the model "
        f"expects {expected} ({names.get(expected, 'multi-channel')}): convert the image and upload it again"
    )
