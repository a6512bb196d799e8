"""Flow fields: the objects they lead back to (2D and 3D).

The representation is Cellpose's (Stringer et al. 2021, :mod:`unetkit.data.flows`): every object
pixel carries a unit vector pointing along the object towards its centre. A network trained on it
(``data.target = "flows"``) predicts a foreground probability and the ``D`` flow components;
objects come back by moving every foreground pixel along the flows (:func:`follow_flows`) and
grouping the pixels that end up together (:func:`group_endpoints`). Touching objects stay apart
because their flows point to different centres, whatever their shape or size.

Components are in axis order (``(dy, dx)`` in 2D, ``(dz, dy, dx)`` in 3D), in pixels per step.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from .data.flows import flows_from_instances
from .instances import InstanceConfig, _relabel

#: Euler steps :func:`follow_flows` takes: enough to cross an object of 100 px radius twice.
FLOW_STEPS = 200
#: Gaussian sigma (px) smoothing the histogram of end points before looking for its peaks.
ENDPOINT_SMOOTHING = 1.0
#: Smoothed end-point density (pixels per px^D) under which an end point belongs to no object: pixels
#: that the flows do not move stay at one per px^D, so an object's centre is where more gather.
MIN_ENDPOINT_DENSITY = 2.0


def follow_flows(flows: np.ndarray, mask: np.ndarray, steps: int = FLOW_STEPS) -> np.ndarray:
    """End points ``(D, M)`` of the ``M`` pixels of ``mask`` ``(*S)`` (in ``np.nonzero`` order) after
    ``steps`` Euler steps of one flow vector each along ``flows`` ``(D, *S)``, interpolated linearly
    between pixels and kept inside the image."""
    points = np.array(np.nonzero(mask), dtype=np.float32)
    upper = (np.array(mask.shape, dtype=np.float32) - 1)[:, None]
    for _ in range(steps):
        move = np.stack([ndi.map_coordinates(f, points, order=1, mode="nearest") for f in flows])
        points += move
        np.clip(points, 0.0, upper, out=points)
    return points


def group_endpoints(points: np.ndarray, shape: tuple[int, ...], min_distance: int = 4) -> np.ndarray:
    """Object ids ``(M,)`` (0: none) of end points ``(D, M)`` in an image of ``shape``: the peaks of
    the (smoothed) histogram of end points, at least ``min_distance`` px apart, are the centres; each
    grows over the dense part of the histogram around it (a watershed), and a pixel belongs to the
    centre whose region it ended in."""
    if not points.shape[1]:
        return np.zeros(0, dtype=np.int64)
    cells = tuple(np.clip(np.rint(points).astype(np.intp), 0, np.array(shape)[:, None] - 1))
    flat = np.ravel_multi_index(cells, shape)
    histogram = np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape).astype(np.float32)
    density = ndi.gaussian_filter(histogram, ENDPOINT_SMOOTHING)
    dense = density >= MIN_ENDPOINT_DENSITY
    peaks = peak_local_max(
        density, min_distance=max(1, int(min_distance)), labels=dense.astype(np.int32), exclude_border=False
    )
    markers = np.zeros(shape, dtype=np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    basins = watershed(-density, markers, mask=dense)
    return basins.ravel()[flat]


def flow_errors(labels: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Mean squared difference ``(N + 1,)`` per object id (index 0 unused) between ``flows``
    ``(D, *S)`` and the flows recomputed from the objects of ``labels`` ``(*S)``, ids ``1..N``."""
    recomputed = flows_from_instances(labels)
    squared = ((recomputed - flows) ** 2).sum(axis=0)
    count = np.bincount(labels.ravel())
    return np.bincount(labels.ravel(), squared.ravel(), len(count)) / np.maximum(count, 1)


def instances_from_flows(
    foreground_probability: np.ndarray, flows: np.ndarray, config: Optional[InstanceConfig] = None,
    steps: int = FLOW_STEPS,
) -> np.ndarray:
    """The flows route: foreground probabilities ``(*S)`` and flows ``(D, *S)`` -> labels ``(*S)`` uint32.

    The pixels above ``config.threshold`` (holes filled with ``fill_holes``) follow the flows, masked
    to that foreground, for ``steps`` steps; pixels that arrive together make one object
    (:func:`group_endpoints`, seeds ``config.min_distance`` apart). Objects under ``config.min_size``
    go, and so, with ``config.flow_threshold``, do those whose predicted flows disagree with the flows
    of their own shape by more than that mean squared error (Cellpose's check against implausible
    shapes).
    """
    config = config or InstanceConfig(method="flows")
    if flows.shape != (foreground_probability.ndim, *foreground_probability.shape):
        raise ValueError(
            f"flows {flows.shape} do not match foreground probabilities {foreground_probability.shape}: "
            "they need one component per axis, (D, *S)"
        )
    mask = foreground_probability > config.threshold
    if config.fill_holes:
        mask = ndi.binary_fill_holes(mask)
    flows = (flows * mask).astype(np.float32, copy=False)
    points = follow_flows(flows, mask, steps)
    labels = np.zeros(mask.shape, dtype=np.int64)
    labels[mask] = group_endpoints(points, mask.shape, config.min_distance)
    labels = _relabel(labels, config.min_size)
    if config.flow_threshold is not None and labels.any():
        errors = flow_errors(labels, flows)
        keep = errors <= config.flow_threshold
        keep[0] = False
        labels = _relabel(np.where(keep[labels], labels, 0), config.min_size)
    return labels
