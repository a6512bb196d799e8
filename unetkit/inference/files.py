"""Prediction from a file to files: the mask in the training encoding, probabilities, an overlay.

Small images are read whole (:func:`unetkit.data.io.read_image`); a 2D TIFF bigger than
``STREAM_PIXELS``, or any 2D TIFF written to a ``.tif`` mask, is streamed tile by tile
(:mod:`.streaming`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from ..activation import expand_binary
from ..data.classes import ClassInfo
from ..data.io import DataError, check_finite, stem_of, suffix_of
from ..data.normalize import NormalizeConfig, apply_normalization, normalization_params, normalize_image
from ..data.pairs import read_checked_image
from ..utils.atomic import atomic_path
from .streaming import OUTPUT_TILE, TiffSource, is_streamable_tiff, rebuffer_bands, write_tiled_tiff

if TYPE_CHECKING:
    from .predictor import Predictor

PathLike = Union[str, Path]
CHANNEL_MODES = ("gray", "rgb")
# 2D TIFFs above this many pixels are streamed rather than read whole (64 Mpx: 256 MB as float32).
STREAM_PIXELS = 64 * 2**20
# ITU-R BT.709 luma weights, as skimage.color.rgb2gray.
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


@dataclass
class PredictionResult:
    """What :func:`predict_file` wrote, with per-class pixel counts ``(K,)`` for the summary.

    ``image`` (``(C, *S)``, as read), ``labels`` (``(*S)``) and ``probabilities`` (``(K, *S)``)
    are kept when the image was predicted in memory (for the overlay and the objects); ``None``
    when it was streamed.
    """

    mask_path: Path
    probabilities_path: Optional[Path]
    class_counts: np.ndarray
    image: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    probabilities: Optional[np.ndarray] = None


def convert_channels(image: np.ndarray, mode: Optional[str]) -> np.ndarray:
    """``(C, *S)`` -> 1 channel (``"gray"``: luma of RGB(A)) or 3 (``"rgb"``: gray repeated, no alpha)."""
    if mode is None:
        return image
    if mode not in CHANNEL_MODES:
        raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {mode!r}")
    channels = image.shape[0]
    if mode == "gray":
        if channels == 1:
            return image
        if channels in (3, 4):
            return np.tensordot(_LUMA, image[:3].astype(np.float32), axes=1)[None]
    else:
        if channels == 3:
            return image
        if channels == 1:
            return np.repeat(image, 3, axis=0)
        if channels == 4:
            return image[:3]
    raise ValueError(f"cannot convert an image with {channels} channels to {mode}")


class ConvertedSource:
    """A region source whose boxes go through :func:`convert_channels`."""

    def __init__(self, source, mode: Optional[str]) -> None:
        self.source = source
        self.mode = mode
        probe = convert_channels(np.zeros((source.shape[0], 1, 1), dtype=np.float32), mode)
        self.shape = (probe.shape[0], *source.shape[1:])

    def read(self, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        return convert_channels(self.source.read(start, stop), self.mode)


def default_classes(num_classes: int) -> ClassInfo:
    """Classes to write masks with when the RUN has no ``classes.json``: 0/255 for binary, ids otherwise."""
    if num_classes == 2:
        return ClassInfo.binary()
    return ClassInfo([f"class_{i}" for i in range(num_classes)])


def save_probabilities(path: Path, probs: np.ndarray) -> Path:
    """Write float32 probabilities ``(K, *S)`` as a TIFF whose axes say the first is the channel."""
    import tifffile

    axes = "CZYX" if probs.ndim == 4 else "CYX"
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, probs.astype(np.float32, copy=False), metadata={"axes": axes},
                         compression="zlib")
    return path


def overlay(image: np.ndarray, labels: np.ndarray, colors: Sequence[tuple[int, int, int]],
            alpha: float = 0.4) -> np.ndarray:
    """Colour overlay of a 2D prediction: ``(C, H, W)`` image + ``(H, W)`` ids -> ``(H, W, 3)`` uint8.

    The image is shown in grey (percentile-stretched); every class but 0 (background) is
    painted in its colour with opacity ``alpha``.
    """
    gray = image[:3].astype(np.float32).mean(axis=0, keepdims=True)
    gray = np.clip(normalize_image(gray, NormalizeConfig("percentile", 1.0, 99.8))[0], 0, 1) * 255
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    table = np.array(colors, dtype=np.float32)
    painted = labels > 0
    rgb[painted] = (1 - alpha) * rgb[painted] + alpha * table[labels[painted]]
    return rgb.round().astype(np.uint8)


def predict_file(
    predictor: Predictor,
    src: PathLike,
    dst: PathLike,
    *,
    probabilities: Optional[PathLike] = None,
    channels: Optional[str] = None,
    stream: Optional[bool] = None,
) -> PredictionResult:
    """Predict the image at ``src`` and write its mask to ``dst`` (see :meth:`Predictor.predict_file`)."""
    src, dst = Path(src), Path(dst)
    prob_path = Path(probabilities) if probabilities is not None else None
    for out in (dst, prob_path):
        if out is not None and out.exists() and out.resolve() == src.resolve():
            raise ValueError(f"{out}: the output would overwrite the input image; choose another output path")
    classes = predictor.classes or default_classes(predictor.num_classes)
    if stream is None:
        stream = streams(predictor, src, dst)
    if stream and predictor.object_diameter is not None:
        raise ValueError(
            f"{src}: this model predicts at a set object scale (data.object_diameter), which needs the "
            "whole image; predict without streaming (stream=False)"
        )
    if stream:
        return _predict_streamed(predictor, src, dst, prob_path, channels, classes)
    image = read_checked_image(src)
    probs = predictor.predict_proba(_checked(predictor, convert_channels(image, channels), src))
    labels = predictor.labels(probs)
    mask_path = classes.save_mask(dst, labels)
    if prob_path is not None:
        save_probabilities(prob_path, probs)
    counts = np.bincount(labels.ravel(), minlength=predictor.num_classes)
    return PredictionResult(mask_path, prob_path, counts, image, labels, probs)


def streams(predictor: Predictor, src: PathLike, dst: PathLike) -> bool:
    """Whether :func:`predict_file` streams ``src``: a 2D TIFF that is big or goes to a TIFF mask
    (never for a model that predicts at a set object scale: the image is resized as a whole)."""
    if predictor.object_diameter is not None:
        return False
    if predictor.dims != 2 or suffix_of(src) not in (".tif", ".tiff") or not is_streamable_tiff(src):
        return False
    if suffix_of(dst) in (".tif", ".tiff"):
        return True
    with TiffSource(src) as source:
        return source.shape[1] * source.shape[2] > STREAM_PIXELS


def _checked(predictor: Predictor, image: np.ndarray, src: Path) -> np.ndarray:
    """The channel-first image read from ``src``; a mismatch with the model is a :class:`DataError`."""
    if image.ndim != predictor.dims + 1:
        kind = "3D volume" if image.ndim == 4 else "2D image"
        raise DataError(f"{src}: a {kind} (shape {image.shape}) but the model is {predictor.dims}D; "
                        f"give {predictor.dims}D images")
    try:
        predictor.check_channels(image.shape[0])
    except ValueError as exc:
        raise DataError(f"{src}: {exc}") from exc
    return image


def _predict_streamed(
    predictor: Predictor, src: Path, dst: Path, prob_path: Optional[Path], channels: Optional[str],
    classes: ClassInfo,
) -> PredictionResult:
    with TiffSource(src, predictor.segment_cache_bytes()) as raw:
        source = ConvertedSource(raw, channels)
        _checked(predictor, np.empty(source.shape[:1] + (1, 1)), src)
        if predictor.normalize is not None:
            sample = source.read((0, 0), (1, 1)) if predictor.normalize.mode == "fixed" else \
                convert_channels(raw.subsample(), channels)
            offset, scale = normalization_params(sample, predictor.normalize)

            def prepare(box: np.ndarray) -> np.ndarray:
                return apply_normalization(check_finite(box, src), offset, scale)
        else:
            def prepare(box: np.ndarray) -> np.ndarray:
                return check_finite(box, src).astype(np.float32, copy=False)

        height, width = source.shape[1:]
        blocks = predictor.iter_proba(source, prepare)
        if prob_path is not None:
            k = predictor.proba_channels
            bands = (np.moveaxis(expand_binary(b), 0, -1) for b in rebuffer_bands(blocks, height))
            write_tiled_tiff(prob_path, bands, (height, width, k), np.float32)
            prob_source = TiffSource(prob_path)
            blocks = _read_bands(prob_source)
        counts = np.zeros(predictor.num_classes, dtype=np.int64)
        dtype = np.uint16 if classes.num_classes > 256 else np.uint8

        def mask_bands():
            for band in rebuffer_bands(blocks, height):
                labels = predictor.labels(np.ascontiguousarray(band))
                counts[:] += np.bincount(labels.ravel(), minlength=len(counts))[: len(counts)]
                yield classes.encode(labels).astype(dtype, copy=False)

        mask_path = dst if suffix_of(dst) in (".tif", ".tiff") else dst.with_name(stem_of(dst) + ".tif")
        shape: tuple[int, ...] = (height, width)
        photometric, colormap = "minisblack", None
        if classes.encoding == "rgb":
            shape, photometric = (height, width, 3), "rgb"
        elif classes.encoding == "palette":
            photometric = "palette"
            colormap = np.zeros((3, 256), dtype=np.uint16)
            colormap[:, : classes.num_classes] = np.array(classes.colors, dtype=np.uint16).T * 257
        write_tiled_tiff(mask_path, mask_bands(), shape, dtype, photometric=photometric, colormap=colormap)
        if prob_path is not None:
            prob_source.close()
    return PredictionResult(mask_path, prob_path, counts)


def _read_bands(source: TiffSource):
    """``(start, stop, (C, rows, W))`` bands of ``OUTPUT_TILE`` rows over a whole TIFF."""
    height, width = source.shape[1:]
    for y in range(0, height, OUTPUT_TILE):
        stop = min(y + OUTPUT_TILE, height)
        yield y, stop, source.read((y, 0), (stop, width))
