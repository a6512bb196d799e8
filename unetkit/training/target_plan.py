"""Which target a segmentation plan trains for: from how crowded the dataset's objects are.

Objects that rarely touch come apart from a foreground map (connected components or a distance
watershed), so the masks' classes are learnt as they are (``"semantic"``). Where many objects touch
another, or some do and their sizes vary too much for one watershed seed distance, the network
learns a target that keeps touching objects apart: the interior/border classes
(:data:`CROWDED_TARGET`), or, where most objects touch, the flows (:data:`DENSE_TARGET`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..data.instances import touching_pixels
from ..data.scale import equivalent_diameters

#: The target for crowded objects: on dsb2018's nuclei (27 % touch another in the median image) the
#: three-class target beat the flows in two 20-minute comparisons (BENCHMARKS.md, issue 15).
CROWDED_TARGET = "three_class"
#: The target where most objects touch: on the synthetic crowded cells (85 % touch) the flows beat the
#: three-class target on every object score for the same number of training steps.
DENSE_TARGET = "flows"
#: Objects are crowded when, in the median image, at least this fraction of them touch another ...
CROWDED_TOUCHING = 0.2
#: ... or when at least SOME_TOUCHING do and their diameters spread more than SIZE_SPREAD (90th over
#: 10th percentile within an image): no single watershed seed distance suits them all.
SOME_TOUCHING = 0.05
SIZE_SPREAD = 3.0
#: Objects are dense from this touching fraction on (between the two measured datasets, 27 % and 85 %).
DENSE_TOUCHING = 0.5


def object_crowding(instances: np.ndarray) -> Optional[tuple[float, float]]:
    """``(fraction of the objects touching another, 90th / 10th percentile of their equivalent
    diameters)`` in one instance image ``(*S)``; ``None`` without objects."""
    ids = np.unique(instances)
    ids = ids[ids > 0]
    if not ids.size:
        return None
    touching = np.unique(instances[touching_pixels(instances)]).size
    low, high = np.percentile(equivalent_diameters(instances), [10, 90])
    return touching / ids.size, float(high / max(low, 1e-9))


def choose_target(
    crowding: Sequence[tuple[float, float]], class_names: Sequence[str], membrane_class: Optional[int] = None
) -> tuple[str, str]:
    """The planned ``data.target`` and why, from :func:`object_crowding` of the fingerprinted images."""
    if membrane_class is not None:
        return "semantic", "target semantic: the objects are cells outlined by a membrane class"
    if len(class_names) != 2:
        return "semantic", f"target semantic: {len(class_names)} classes, not one kind of object"
    if not crowding:
        return "semantic", "target semantic: no separate objects measured"
    touching, spread = (float(v) for v in np.median(np.array(crowding), axis=0))
    numbers = (
        f"{touching:.0%} of the objects touch another in the median image and their diameters spread "
        f"{spread:.1f}x within an image (90th/10th percentile)"
    )
    if touching >= DENSE_TOUCHING:
        return DENSE_TARGET, (
            f"target {DENSE_TARGET}: {numbers}, so most objects touch; the network learns a flow field "
            "towards each object's centre, which keeps touching objects apart whatever their size and shape "
            "(`predict --instances` follows it)"
        )
    if touching >= CROWDED_TOUCHING or (touching >= SOME_TOUCHING and spread >= SIZE_SPREAD):
        return CROWDED_TARGET, (
            f"target {CROWDED_TARGET}: {numbers}, so a foreground map would merge them; the network learns "
            "each object's interior and its border, and the interiors seed the objects "
            "(`predict --instances`); flows are planned from "
            f"{DENSE_TOUCHING:.0%} touching on"
        )
    return "semantic", (
        f"target semantic: {numbers}, few enough for the foreground and a distance-transform watershed "
        "to separate them"
    )
