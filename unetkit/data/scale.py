"""Object scale: bring every image to one typical object size (Cellpose's "diameter").

A U-Net has a fixed receptive field and learns boundaries of a fixed width in pixels, so a dataset
whose objects are 8 px across in some images and 50 px in others (nuclei at different
magnifications) is harder than the same objects at one size. With ``data.object_diameter`` set,
each training image is resized so that the median equivalent diameter of its objects (measured on
its instance or mask image) becomes that many pixels; at prediction the diameter is measured on a
first pass at the image's own scale, the image is resized accordingly and predicted again, and the
probabilities are resized back (:func:`predict_at_object_scale`). Volumes are resized by the same
factor along every axis (diameters are measured in voxels), so anisotropic stacks keep their anisotropy.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
from scipy import ndimage

#: Resize factors are clipped to this range: beyond it an image is mostly padding or mostly gone.
FACTOR_LIMITS = (0.25, 4.0)
#: Within this relative distance of 1 an image is left at its own scale (resampling blurs a little).
FACTOR_TOLERANCE = 0.1
#: Predicted objects smaller than this many pixels (voxels) are noise, not objects to measure.
MIN_OBJECT_SIZE = 9


def equivalent_diameters(instances: np.ndarray, min_size: int = 1) -> np.ndarray:
    """Diameters of the circles (spheres) with the areas (volumes) of the objects of ``instances``
    ``(*S)`` (0 = background) of at least ``min_size`` px; float64 ``(N,)``."""
    sizes = np.bincount(np.asarray(instances, dtype=np.int64).ravel())[1:]
    sizes = sizes[sizes >= max(min_size, 1)].astype(np.float64)
    if np.ndim(instances) == 3:
        return 2.0 * (sizes * 3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    return 2.0 * np.sqrt(sizes / math.pi)


def median_object_diameter(instances: np.ndarray) -> float:
    """Median equivalent diameter of the objects of ``instances`` (``nan`` without objects)."""
    diameters = equivalent_diameters(instances)
    return float(np.median(diameters)) if diameters.size else math.nan


def scale_factor(diameter: float, target: float) -> float:
    """The resize factor that brings objects of ``diameter`` px to ``target`` px: clipped to
    :data:`FACTOR_LIMITS`, and 1.0 when there is nothing to measure or it is within
    :data:`FACTOR_TOLERANCE` of 1."""
    if not math.isfinite(diameter) or diameter <= 0:
        return 1.0
    factor = float(np.clip(target / diameter, *FACTOR_LIMITS))
    return 1.0 if abs(factor - 1.0) <= FACTOR_TOLERANCE else factor


def resize_spatial(array: np.ndarray, shape: tuple[int, ...], *, labels: bool) -> np.ndarray:
    """Resize the trailing ``len(shape)`` axes of ``array`` to ``shape``.

    ``labels``: nearest neighbour (class or object ids stay ids); else linear interpolation in
    float32. Leading axes (channels) are kept.
    """
    spatial = array.shape[array.ndim - len(shape):]
    if tuple(spatial) == tuple(shape):
        return array
    zoom = (1.0,) * (array.ndim - len(shape)) + tuple(n / s for n, s in zip(shape, spatial))
    source = array if labels else array.astype(np.float32, copy=False)
    # With grid_mode the output size is round(size * zoom): exactly ``shape``.
    return ndimage.zoom(source, zoom, order=0 if labels else 1, mode="nearest", grid_mode=True)


def scaled_shape(spatial: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """``spatial`` multiplied by ``factor``, rounded, at least 1 px per axis."""
    return tuple(max(1, int(round(n * factor))) for n in spatial)


def predicted_object_diameter(probabilities: np.ndarray) -> float:
    """Median diameter of the objects in probabilities ``(K, *S)``: connected regions where a class
    other than 0 (background) is the most likely, split where they touch by a distance-transform
    watershed; regions under :data:`MIN_OBJECT_SIZE` px are left out."""
    from ..instances import split_touching

    foreground = probabilities.argmax(axis=0) != 0
    diameters = equivalent_diameters(split_touching(foreground), MIN_OBJECT_SIZE)
    return float(np.median(diameters)) if diameters.size else math.nan


class ScaleLimitError(ValueError):
    """The object-scale pass would resize an image beyond a pixel (voxel) limit."""

    def __init__(self, spatial: tuple[int, ...], factor: float, shape: tuple[int, ...], limit: int) -> None:
        super().__init__(
            f"at the model's object scale the image of shape {spatial} would be resized x{factor:.2f} to "
            f"shape {shape} ({math.prod(shape):,} pixels), over the limit of {limit:,}: crop it to at most "
            f"{int(limit / factor ** len(shape)):,} pixels"
        )


def predict_at_object_scale(
    predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, target: float,
    max_pixels: Optional[int] = None, classes: Optional[int] = None,
) -> np.ndarray:
    """Probabilities ``(K, *S)`` of ``image`` ``(C, *S)`` predicted with its objects at ``target`` px.

    ``predict`` maps a ``(C, *S')`` image to ``(K, *S')`` probabilities. A first pass at the
    image's own scale measures the objects (:func:`predicted_object_diameter`); if they are not
    already about ``target`` px, the image is resized, predicted again, and the probabilities are
    resized back to ``S`` (linear interpolation, renormalised to sum to 1). ``max_pixels``: the
    resized image may have at most that many pixels (voxels), else :class:`ScaleLimitError` (the
    resize enlarges an image up to 4x per axis). ``classes``: only the first ``classes`` channels are
    probabilities; the others (a flows network's flow field) are resized back as they are.
    """
    first = predict(image)
    classes = first.shape[0] if classes is None else classes
    factor = scale_factor(predicted_object_diameter(first[:classes]), target)
    if factor == 1.0:
        return first
    spatial = image.shape[1:]
    shape = scaled_shape(spatial, factor)
    if max_pixels is not None and math.prod(shape) > max_pixels:
        raise ScaleLimitError(spatial, factor, shape, max_pixels)
    resized = resize_spatial(image, shape, labels=False)
    outputs = resize_spatial(predict(resized), spatial, labels=False)
    probabilities = outputs[:classes]
    np.clip(probabilities, 0.0, None, out=probabilities)
    probabilities /= np.maximum(probabilities.sum(axis=0, keepdims=True), 1e-12)
    return outputs
