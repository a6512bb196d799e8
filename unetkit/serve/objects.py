"""Objects in a predicted mask: connected components per class, with area, box and centroid.

Kept small on purpose: a proper instance-segmentation step (touching objects split) can
replace :func:`measure_objects` without changing the server's JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.measure import regionprops

from ..data.classes import ClassInfo
from ..data.instances import label_objects


def measure_objects(labels: np.ndarray, classes: ClassInfo) -> list[dict[str, Any]]:
    """One dict per connected object of every class but 0 (background) in ``labels`` ``(H, W)``.

    ``box`` is ``[x_min, y_min, x_max, y_max]`` in pixels (max exclusive), ``centroid`` ``[x, y]``.
    """
    objects: list[dict[str, Any]] = []
    for class_id in range(1, classes.num_classes):
        for region in regionprops(label_objects(labels == class_id)):
            y0, x0, y1, x1 = (int(v) for v in region.bbox)
            cy, cx = region.centroid
            objects.append({
                "id": len(objects) + 1,
                "class_id": class_id,
                "class": classes.names[class_id],
                "area": int(region.area),
                "box": [x0, y0, x1, y1],
                "centroid": [round(float(cx), 2), round(float(cy), 2)],
            })
    return objects
