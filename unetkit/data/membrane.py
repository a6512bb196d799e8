"""Is a class a membrane? Recognising cells outlined by a thin connected boundary (EM, ISBI 2012).

In membrane data one class (the membrane) forms a thin network that runs between all the objects
(the cells) and is connected across the image; the objects are many and much wider than the
network. Such data needs closed boundaries to get its objects right (a one-pixel gap in a membrane
joins two cells), so the plan sends it to the membrane route of :mod:`unetkit.instances`. Nuclei on a
background are not membrane data: their background is connected too, but it is as wide as the
objects or wider.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

#: The network's largest connected piece holds at least this share of its pixels.
CONNECTED_SHARE = 0.9
#: The network is at most this wide (mean width) relative to the objects' median diameter ...
WIDTH_RATIO = 0.25
#: ... and it separates at least this many objects in an image.
MIN_OBJECTS = 8


def membrane_class_of(
    labels: np.ndarray, num_classes: int, ignore_index: Optional[int] = None
) -> Optional[int]:
    """The class of ``labels`` ``(*S)`` (class ids) that forms a thin connected network around the
    other class's objects, or ``None``. Only two-class masks can be membrane data."""
    if num_classes != 2:
        return None
    for candidate in (0, 1):
        network = labels == candidate
        objects = (labels == 1 - candidate) if ignore_index is None else (labels == 1 - candidate) & (
            labels != ignore_index
        )
        if not network.any() or not objects.any():
            continue
        pieces, count = ndimage.label(network, structure=np.ones((3,) * labels.ndim, dtype=bool))
        largest = np.bincount(pieces.ravel())[1:].max()
        if largest < CONNECTED_SHARE * np.count_nonzero(network):
            continue
        cells, n_cells = ndimage.label(objects)
        if n_cells < MIN_OBJECTS:
            continue
        sizes = np.bincount(cells.ravel())[1:]
        diameter = float(np.median(2.0 * np.sqrt(sizes / np.pi))) if labels.ndim == 2 else float(
            np.median(np.cbrt(6.0 * sizes / np.pi))
        )
        # Mean width of the network: twice the mean distance of its pixels to the nearest object.
        width = 2.0 * float(ndimage.distance_transform_edt(network)[network].mean())
        if width <= WIDTH_RATIO * diameter:
            return candidate
    return None


def membrane_class_of_dataset(votes: Sequence[Optional[int]]) -> Optional[int]:
    """The membrane class of a dataset from each image's :func:`membrane_class_of`: the class most
    images agree on, if at least half of them do."""
    found = [v for v in votes if v is not None]
    if not votes or len(found) * 2 < len(votes):
        return None
    values, counts = np.unique(found, return_counts=True)
    best = int(np.argmax(counts))
    return int(values[best]) if counts[best] * 2 >= len(votes) else None
