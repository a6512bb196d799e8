"""The flows target (Cellpose's representation, Stringer et al. 2021): for every object pixel a unit
vector pointing along the object towards its centre, the normalised gradient of a heat diffusion
from the centre restricted to the object. :mod:`unetkit.flows` turns predicted flows back into objects.

Components are in axis order (``(dy, dx)`` in 2D, ``(dz, dy, dx)`` in 3D).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi

from .instances import object_borders, touching_pixels

#: Weight of the squared distance to the centroid against the depth when placing an object's centre:
#: small, so that it only decides between pixels of (about) the same depth.
CENTRE_TIE_BREAK = 1e-4


def _offsets(dims: int) -> list[tuple[int, ...]]:
    """The ``3**D - 1`` neighbour offsets of a pixel."""
    return [o for o in itertools.product((-1, 0, 1), repeat=dims) if any(o)]


def _neighbour(array: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """``out[p] = array[p + offset]``; zero where ``p + offset`` leaves the array. ``(*S)``."""
    padded = np.pad(array, 1)
    return padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, array.shape))]


def object_centres(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids ``(N,)`` of the objects of ``labels`` ``(*S)`` and their centres ``(N, D)`` (int): the pixel of
    each object farthest from its outline (the maximum of its distance transform), so inside it
    whatever its shape; among pixels about as deep, the one nearest the object's centroid."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if not ids.size:
        return ids, np.zeros((0, labels.ndim), dtype=np.int64)
    inside = labels > 0
    depth = ndi.distance_transform_edt(inside & ~object_borders(labels, 1))
    lookup = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    centroids = np.array(ndi.center_of_mass(inside, labels, ids)).reshape(len(ids), labels.ndim)
    offset = np.indices(labels.shape) - np.moveaxis(centroids[lookup[labels]], -1, 0)
    score = depth - CENTRE_TIE_BREAK * (offset**2).sum(axis=0)
    centres = ndi.maximum_position(score, labels, ids)
    return ids, np.array(centres, dtype=np.int64).reshape(len(ids), labels.ndim)


def _box_sum(padded: np.ndarray) -> np.ndarray:
    """Sum over the ``3**D`` neighbourhood of each pixel of a 1-px zero-padded array ``(*S + 2)``
    -> ``(*S)``, one axis at a time."""
    out = padded
    for axis in range(padded.ndim):
        n = out.shape[axis]
        window = [slice(None)] * padded.ndim
        parts = []
        for start in range(3):
            window[axis] = slice(start, start + n - 2)
            parts.append(out[tuple(window)])
        out = parts[0] + parts[1] + parts[2]
    return out


def _touching_sums(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How to sum the heat of the pixels that touch another object over their own object only.

    Returns the flat indices ``(P,)`` of the object pixels of ``labels`` ``(*S)`` with a neighbour in
    another object, and for each of their neighbours in the same object (themselves included) the
    pair's position in that array and the neighbour's flat index.
    """
    touching = touching_pixels(labels)
    where = np.nonzero(touching)
    pixels = np.ravel_multi_index(where, labels.shape)
    position = np.full(labels.shape, -1, dtype=np.int64)
    position[where] = np.arange(len(pixels))
    rows, neighbours = [np.arange(len(pixels))], [pixels]
    for offset in _offsets(labels.ndim):
        same = touching & (_neighbour(labels, offset) == labels)
        rows.append(position[same])
        shifted = np.array(np.nonzero(same)) + np.array(offset)[:, None]
        neighbours.append(np.ravel_multi_index(tuple(shifted), labels.shape))
    return pixels, np.concatenate(rows), np.concatenate(neighbours)


def flows_from_instances(labels: np.ndarray) -> np.ndarray:
    """Instance labels ``(*S)`` (0 background) -> float32 flows ``(D, *S)``: unit vectors pointing
    towards each object's centre, zero on the background and at the centres.

    The heat diffusion runs for all objects at once on the whole array: at each step a unit of heat
    is added at every centre and each object pixel takes the mean of its ``3**D`` neighbourhood,
    neighbours of another object (or of the background) counting as cold, so the heat never leaks
    between touching objects. ``2 * (sum of the largest object's bounding-box sides)`` steps
    (Cellpose's count) let the heat reach every pixel; the flows are the normalised central
    differences of it within each object.
    """
    labels = np.asarray(labels)
    dims = labels.ndim
    flows = np.zeros((dims, *labels.shape), dtype=np.float32)
    ids, centres = object_centres(labels)
    if not ids.size:
        return flows
    inside = labels > 0
    boxes = ndi.find_objects(labels)
    steps = 2 * max(sum(s.stop - s.start for s in box) for box in boxes if box is not None)
    touching, pair_row, pair_neighbour = _touching_sums(labels)
    source = tuple(centres.T + 1)
    # The heat lives in a zero-padded array; it is zero off the objects, so a plain neighbourhood
    # sum is right except where two objects touch, whose pixels are summed over their own object.
    padded = np.zeros(tuple(n + 2 for n in labels.shape), dtype=np.float32)
    heat = padded[(slice(1, -1),) * dims]
    scale = np.float32(1.0 / 3**dims)
    for _ in range(steps):
        padded[source] += 1.0
        total = _box_sum(padded)
        flat = total.reshape(-1)
        flat[touching] = np.bincount(pair_row, heat.reshape(-1)[pair_neighbour], len(touching))
        total *= inside
        np.multiply(total, scale, out=heat)
    for axis in range(dims):
        step = tuple(int(a == axis) for a in range(dims))
        back = tuple(-s for s in step)
        ahead = np.where(_neighbour(labels, step) == labels, _neighbour(heat, step), 0.0)
        behind = np.where(_neighbour(labels, back) == labels, _neighbour(heat, back), 0.0)
        flows[axis] = ahead - behind
    norm = np.sqrt((flows**2).sum(axis=0))
    np.divide(flows, norm, out=flows, where=norm > 0)
    flows[:, ~inside] = 0.0
    flows[(slice(None), *centres.T)] = 0.0  # where the flows end
    return flows
