"""Objects in a prediction, for the server's JSON: area, box and centroid of each object.

Binary, 3-class, flows, distance and membrane models separate touching objects by their run's own route
(:func:`unetkit.instances.instances_from_probabilities`); other multi-class models count the
connected components of each class.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from skimage.measure import regionprops

from ..data.classes import ClassInfo
from ..data.instances import label_objects
from ..instances import default_instance_method, instance_config_for, instances_from_probabilities


def object_labels(probabilities: np.ndarray, labels: np.ndarray, classes: ClassInfo,
                  threshold: float, target: str = "semantic",
                  membrane_class: Optional[int] = None) -> np.ndarray:
    """Instance labels ``(H, W)`` from per-class probabilities ``(K, H, W)`` and class ids ``(H, W)``
    (``target`` and ``membrane_class``: the run's ``data.target`` and ``data.membrane_class``)."""
    method = default_instance_method(target, classes.names, membrane_class)
    if method != "watershed" or probabilities.shape[0] == 2:
        config = instance_config_for(target, classes.names, membrane_class, method, threshold=threshold)
        return instances_from_probabilities(probabilities, config, target)
    instances = np.zeros(labels.shape, dtype=np.int64)
    for class_id in range(1, classes.num_classes):
        found = label_objects(labels == class_id)
        instances[found > 0] = found[found > 0] + instances.max()
    return instances


def measure_objects(instances: np.ndarray, labels: np.ndarray, classes: ClassInfo) -> list[dict[str, Any]]:
    """One dict per object of ``instances`` ``(H, W)``, its class the most common id of ``labels`` in it.

    ``box`` is ``[x_min, y_min, x_max, y_max]`` in pixels (max exclusive), ``centroid`` ``[x, y]``.
    """
    objects: list[dict[str, Any]] = []
    for region in regionprops(instances.astype(np.int64)):
        y0, x0, y1, x1 = (int(v) for v in region.bbox)
        cy, cx = region.centroid
        inside = labels[tuple(region.coords.T)]
        class_id = int(np.bincount(inside[inside > 0], minlength=2).argmax()) if (inside > 0).any() else 1
        objects.append({
            "id": len(objects) + 1,
            "class_id": class_id,
            "class": classes.names[class_id],
            "area": int(region.area),
            "box": [x0, y0, x1, y1],
            "centroid": [round(float(cx), 2), round(float(cy), 2)],
        })
    return objects
