"""Conversions between instance labels (one id per object) and semantic targets."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: What a network is trained to output: the dataset's classes; background / interior / border; the
#: foreground and a flow field towards each object's centre (:mod:`unetkit.flows`); or the foreground
#: and each pixel's distance to its object's outline (:func:`distance_from_instances`).
TARGETS = ("semantic", "three_class", "flows", "distance")
#: The targets whose network predicts a foreground logit plus regression maps (:func:`map_channels`).
MAP_TARGETS = ("flows", "distance")


def map_channels(target: str, dims: int) -> int:
    """Regression maps a ``target`` network predicts besides its foreground logit: one flow component
    per spatial axis (``flows``), one distance map (``distance``), none for the class targets."""
    return dims if target == "flows" else 1 if target == "distance" else 0


def label_objects(foreground: np.ndarray) -> np.ndarray:
    """Connected components of a boolean mask ``(*S)`` -> int32 instance ids (0 = background).

    Used when a dataset has no instance images, so touching objects merge into one.
    """
    labels, _ = ndimage.label(np.asarray(foreground) > 0)
    return labels.astype(np.int32, copy=False)


def object_borders(instances: np.ndarray, width: int = 2) -> np.ndarray:
    """Boolean ``(*S)``: object pixels within ``width`` pixels of background or of another object."""
    instances = np.asarray(instances)
    size = 2 * width + 1
    differs = (ndimage.maximum_filter(instances, size=size, mode="nearest") != instances) | (
        ndimage.minimum_filter(instances, size=size, mode="nearest") != instances
    )
    return differs & (instances > 0)


def touching_pixels(instances: np.ndarray) -> np.ndarray:
    """Boolean ``(*S)``: object pixels with a neighbour (of the ``3**D`` neighbourhood) in another object."""
    instances = np.asarray(instances)
    beyond = int(instances.max(initial=0)) + 1
    highest = ndimage.maximum_filter(instances, size=3, mode="constant", cval=0)
    lowest = ndimage.minimum_filter(np.where(instances > 0, instances, beyond), size=3, mode="constant",
                                    cval=beyond)
    return (instances > 0) & ((highest > instances) | (lowest < instances))


def three_class_from_instances(instances: np.ndarray, border_width: int = 2) -> np.ndarray:
    """Instance ids ``(*S)`` -> uint8 ``(*S)``: 0 background, 1 interior, 2 border (``border_width`` px)."""
    out = (np.asarray(instances) > 0).astype(np.uint8)
    out[object_borders(instances, border_width)] = 2
    return out


def distance_from_instances(instances: np.ndarray) -> np.ndarray:
    """Instance ids ``(*S)`` -> float32 ``(1, *S)``: each object pixel's Euclidean distance to the
    nearest pixel outside its object (background or a touching object), divided by the largest such
    distance in the object, so 1 at every object's centre whatever its size; 0 on the background.

    Touching objects are cut apart by their contact pixels (0), so the map has one peak per object.
    """
    instances = np.asarray(instances)
    inside = (instances > 0) & ~touching_pixels(instances)
    depth = ndimage.distance_transform_edt(inside).astype(np.float32)
    deepest = ndimage.maximum(depth, instances, index=np.arange(int(instances.max(initial=0)) + 1))
    deepest = np.asarray(deepest, dtype=np.float32).reshape(-1)
    scale = np.divide(1.0, deepest, out=np.zeros_like(deepest), where=deepest > 0)
    return (depth * scale[instances])[None]


def to_data_labels(pred: np.ndarray, target: str) -> np.ndarray:
    """A network's class ids ``(*S)`` -> the dataset's: a ``three_class`` network (background /
    interior / border) predicts foreground (1) wherever it predicts interior or border, a ``flows`` or
    ``distance`` network wherever its foreground wins."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if target == "three_class" or target in MAP_TARGETS:
        return (np.asarray(pred) > 0).astype(np.int64)
    return pred
