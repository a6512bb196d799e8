"""From pixels to objects: separate touching objects, measure them, export them.

Five routes turn a network's output into an instance label image (0 = background, 1..N objects),
all behind :func:`instances_from_probabilities`; :func:`default_instance_method` picks a run's own:

1. semantic foreground probabilities -> :func:`instances_from_foreground`: a seeded watershed on the
   distance transform (``method="watershed"``), or plain connected components
   (``method="components"``);
2. the 3-class target (background / interior / border) -> :func:`instances_from_three_class`:
   connected interiors are the seeds, grown into the border region by a watershed;
3. membrane data (cells separated by a thin boundary class, ISBI 2012) ->
   :func:`instances_from_membranes`: a watershed of the boundary probability from confident cell
   seeds, weak shared lines merged (``method="membrane"``);
4. the flows target -> :func:`unetkit.flows.instances_from_flows`: pixels follow the predicted
   flow field to the centre of their object (``method="flows"``);
5. the distance target -> :func:`instances_from_distance`: a watershed of the predicted distance to
   the outline from the objects' cores (``method="distance"``).

:func:`otsu_watershed` is the classical baseline without learning. :func:`object_table` measures
the objects (2D and 3D) and :func:`coco_dataset` writes bounding boxes and RLE masks as COCO JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import regionprops
from skimage.segmentation import watershed

from .data.classes import ClassInfo
from .data.instances import MAP_TARGETS, map_channels
from .utils.atomic import atomic_path, atomic_write_json, atomic_write_text

INSTANCE_METHODS = ("watershed", "components", "three_class", "membrane", "flows", "distance")


@dataclass
class InstanceConfig:
    """How probabilities become objects.

    ``threshold``: foreground probability cut (routes 1 and 2: interior + border for route 2).
    ``min_distance``: smallest distance in pixels between two watershed seeds; about the radius of
    the smallest object to keep apart. ``smoothing``: Gaussian sigma applied to the distance map
    before looking for seeds, so that a ragged outline does not create extra seeds.
    ``min_size``: objects smaller than this many pixels (voxels) are dropped.
    ``fill_holes``: fill holes inside each foreground region before splitting.
    ``flow_threshold``: the flows route (:mod:`unetkit.flows`) drops objects whose predicted flows
    differ from the flows of their own shape by more than this mean squared error (Cellpose's check,
    0.4 there; ``None``, the default: keeps them all, as on crowded synthetic cells the check at 0.4
    dropped true objects of a briefly trained network and at 0.8 changed nothing).

    The membrane route (``method="membrane"``, for cells outlined by a thin boundary class as in EM)
    floods the boundary probability smoothed by ``smoothing`` from seeds where the cell probability
    exceeds ``seed_threshold`` (seeds under ``min_size`` pixels are dropped), leaving one-pixel
    watershed lines between cells; with ``merge_threshold`` two neighbouring cells whose shared
    line has a mean boundary probability below it become one. ``membrane_class``: the class id of
    the boundary (0 in ISBI 2012, whose masks are white cells on black membranes).

    The distance route (``method="distance"``) seeds one object per connected core where the
    predicted distance to the outline (0-1 of the object's largest) exceeds ``distance_seed``.
    """

    method: str = "watershed"
    threshold: float = 0.5
    min_distance: int = 4
    smoothing: float = 1.0
    min_size: int = 16
    fill_holes: bool = True
    flow_threshold: Optional[float] = None
    seed_threshold: float = 0.95
    merge_threshold: Optional[float] = None
    distance_seed: float = 0.5
    membrane_class: int = 0

    def __post_init__(self) -> None:
        if self.method not in INSTANCE_METHODS:
            raise ValueError(f"instance method must be one of {INSTANCE_METHODS}, got {self.method!r}")


def _relabel(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects below ``min_size`` and number the rest 1..N; uint32 output."""
    labels = labels.astype(np.int64, copy=False)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lookup = np.zeros(len(sizes), dtype=np.uint32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lookup[labels]


def split_touching(mask: np.ndarray, min_distance: int = 4, smoothing: float = 1.0) -> np.ndarray:
    """Seeded watershed on the distance transform of a binary ``mask`` (2D or 3D).

    Seeds are the local maxima of the (smoothed) distance to the background, at least
    ``min_distance`` apart, one set per connected component; each seed floods its basin of
    ``-distance`` inside the mask. Returns int labels of the same shape.
    """
    mask = mask.astype(bool)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int64)
    distance = ndi.distance_transform_edt(mask)
    if smoothing > 0:
        distance = ndi.gaussian_filter(distance, smoothing)
    components, _ = ndi.label(mask)
    peaks = peak_local_max(
        distance, min_distance=max(1, int(min_distance)), labels=components, exclude_border=False
    )
    markers = np.zeros(mask.shape, dtype=np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # Components without a peak (tiny or flat ones) still become one object each.
    unseeded = np.setdiff1d(np.unique(components[mask]), np.unique(components[markers > 0]))
    for offset, component in enumerate(unseeded, start=len(peaks) + 1):
        markers[components == component] = offset
    return watershed(-distance, markers, mask=mask)


def instances_from_foreground(
    foreground_probability: np.ndarray, config: Optional[InstanceConfig] = None
) -> np.ndarray:
    """Route 1: foreground probabilities ``(*S)`` in [0, 1] -> instance labels ``(*S)`` uint32."""
    config = config or InstanceConfig()
    mask = foreground_probability > config.threshold
    if config.fill_holes:
        mask = ndi.binary_fill_holes(mask)
    if config.method == "components":
        labels, _ = ndi.label(mask)
    else:
        labels = split_touching(mask, config.min_distance, config.smoothing)
    return _relabel(labels, config.min_size)


def instances_from_distance(
    foreground_probability: np.ndarray, distance: np.ndarray, config: Optional[InstanceConfig] = None
) -> np.ndarray:
    """The distance route: foreground probabilities ``(*S)`` and the predicted distance to the outline
    ``(*S)`` (0-1, 1 at each object's centre; :func:`unetkit.data.instances.distance_from_instances`)
    -> labels ``(*S)`` uint32.

    Seeds are the connected cores where the distance exceeds ``config.distance_seed`` (cores under
    ``config.min_size`` / 4 pixels are dropped as noise); each floods its basin of ``-distance`` inside the
    foreground (``config.threshold``, holes filled with ``fill_holes``). Foreground regions without a
    core stay one object each.
    """
    config = config or InstanceConfig(method="distance")
    if distance.shape != foreground_probability.shape:
        raise ValueError(
            f"distance {distance.shape} does not match foreground probabilities "
            f"{foreground_probability.shape}"
        )
    mask = foreground_probability > config.threshold
    if config.fill_holes:
        mask = ndi.binary_fill_holes(mask)
    if config.smoothing > 0:
        distance = ndi.gaussian_filter(distance.astype(np.float32), config.smoothing)
    seeds, _ = ndi.label((distance > config.distance_seed) & mask)
    seeds = _relabel(seeds, max(1, config.min_size // 4)).astype(np.int64)
    components, _ = ndi.label(mask)
    unseeded = np.setdiff1d(np.unique(components[mask]), np.unique(components[seeds > 0]))
    for offset, component in enumerate(unseeded, start=int(seeds.max(initial=0)) + 1):
        seeds[components == component] = offset
    return _relabel(watershed(-distance, seeds, mask=mask), config.min_size)


def instances_from_three_class(
    probabilities: np.ndarray, config: Optional[InstanceConfig] = None
) -> np.ndarray:
    """Route 2: probabilities ``(3, *S)`` for background / interior / border -> labels ``(*S)`` uint32.

    Seeds are the connected components of the pixels where *interior* is the most likely class;
    they grow by a watershed on ``-P(interior)`` into every pixel whose foreground probability
    (interior + border) exceeds ``threshold``.
    """
    config = config or InstanceConfig(method="three_class")
    if probabilities.shape[0] != 3:
        raise ValueError(
            f"the 3-class route needs probabilities (3, *S) for background/interior/border, "
            f"got shape {probabilities.shape}; train with --target three-class"
        )
    interior = probabilities.argmax(axis=0) == 1
    foreground = probabilities[1] + probabilities[2] > config.threshold
    if config.fill_holes:
        foreground = ndi.binary_fill_holes(foreground)
    seeds, _ = ndi.label(interior & foreground)
    labels = watershed(-probabilities[1], seeds, mask=foreground)
    return _relabel(labels, config.min_size)


def _merge_weak_boundaries(labels: np.ndarray, boundary: np.ndarray, threshold: float) -> np.ndarray:
    """Merge the regions of ``labels`` (0 = watershed line) whose shared line has a mean ``boundary``
    probability below ``threshold``; the lines between merged regions join them."""
    labels = labels.astype(np.int64)
    footprint = np.ones((3,) * labels.ndim, dtype=bool)
    big = int(labels.max()) + 1
    high = ndi.maximum_filter(labels, footprint=footprint)
    low = ndi.minimum_filter(np.where(labels > 0, labels, big), footprint=footprint)
    line = (labels == 0) & (low != big) & (low != high)
    if not line.any():
        return labels
    pairs = np.stack([low[line], high[line]], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    mean = np.bincount(inverse, weights=boundary[line]) / np.bincount(inverse)
    parent = np.arange(int(labels.max()) + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (a, b), value in zip(unique.tolist(), mean.tolist()):
        if value < threshold:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(len(parent))])
    merged = roots[labels]
    joined = line.copy()
    joined[line] = roots[pairs[:, 0]] == roots[pairs[:, 1]]
    merged[joined] = roots[low[joined]]
    return merged


def instances_from_membranes(
    probabilities: np.ndarray, config: Optional[InstanceConfig] = None
) -> tuple[np.ndarray, np.ndarray]:
    """The membrane route: probabilities ``(2, *S)`` of membrane-outlined cells -> ``(labels, lines)``.

    ``labels`` ``(*S)`` uint32: closed cells, each the basin of one seed on the smoothed boundary
    probability, with one-pixel watershed lines (0) between them, so a gap of a pixel or two in a
    membrane no longer joins two cells. ``lines`` ``(*S)`` bool: the watershed lines, to be drawn
    into a semantic mask as membrane. Images without a seed come back as one cell.
    """
    config = config or InstanceConfig(method="membrane")
    if probabilities.shape[0] != 2:
        raise ValueError(
            "the membrane route needs a binary (cell / membrane) model; this one has "
            f"{probabilities.shape[0]} classes"
        )
    boundary = probabilities[config.membrane_class].astype(np.float32)
    cells = 1.0 - boundary
    if config.smoothing > 0:
        boundary = ndi.gaussian_filter(boundary, config.smoothing)
    seeds, _ = ndi.label(cells > config.seed_threshold)
    seeds = _relabel(seeds, config.min_size).astype(np.int64)
    if not seeds.any():
        return np.ones(boundary.shape, dtype=np.uint32), np.zeros(boundary.shape, dtype=bool)
    labels = watershed(boundary, seeds, watershed_line=True)
    if config.merge_threshold is not None:
        labels = _merge_weak_boundaries(labels, boundary, config.merge_threshold)
    return _relabel(labels, 1), labels == 0


def instances_from_probabilities(
    probabilities: np.ndarray, config: InstanceConfig, target: str = "semantic"
) -> np.ndarray:
    """Per-class probabilities ``(K, *S)`` -> instance labels ``(*S)`` uint32 by ``config.method``.

    The one dispatch over the routes, used by ``predict``, ``evaluate`` and the server. A run trained
    with ``target="flows"`` gives ``(2 + D, *S)``: background, foreground, then one flow component
    per spatial axis; with ``target="distance"`` ``(3, *S)``: background, foreground, distance. Their
    foreground alone feeds the other routes.
    """
    if config.method == "three_class":
        return instances_from_three_class(probabilities, config)
    if config.method == "membrane":
        return instances_from_membranes(probabilities, config)[0]
    if config.method in MAP_TARGETS:
        maps = map_channels(config.method, probabilities.ndim - 1)
        if target != config.method or probabilities.shape[0] != 2 + maps:
            what = "one flow component per axis" if config.method == "flows" else "the distance"
            raise ValueError(
                f"the {config.method} route needs a {config.method} network's outputs (background, "
                f"foreground, {what}), got shape {probabilities.shape} from a {target!r} run; "
                f"train with --target {config.method}"
            )
        if config.method == "distance":
            return instances_from_distance(probabilities[1], probabilities[2], config)
        from .flows import instances_from_flows

        return instances_from_flows(probabilities[1], probabilities[2:], config)
    if target in MAP_TARGETS:
        probabilities = probabilities[:2]
    if probabilities.shape[0] != 2:
        raise ValueError(
            f"the instance route {config.method!r} needs a binary (foreground) model; this one has "
            f"{probabilities.shape[0]} classes (use a run trained with --data.target three_class)"
        )
    return instances_from_foreground(probabilities[1], config)


def membrane_config(membrane_class: int) -> InstanceConfig:
    """The membrane route's settings for this boundary class: seeds where the cell probability exceeds
    0.95, the boundary smoothed by sigma 1, cells whose shared line averages under 0.2 merged (chosen on
    ISBI 2012 validation sections 20-24, leave-one-section-out; BENCHMARKS.md)."""
    return InstanceConfig(method="membrane", membrane_class=membrane_class, seed_threshold=0.95,
                          merge_threshold=0.2, smoothing=1.0)


def default_instance_method(
    target: str, class_names: Sequence[str], membrane_class: Optional[int] = None
) -> str:
    """The route a run's objects take unless the user picks one: from its ``data.target`` and, for
    membrane data, ``data.membrane_class``."""
    if membrane_class is not None and target == "semantic":
        return "membrane"
    if target in MAP_TARGETS:
        return target
    if target == "three_class" or list(class_names) == list(ClassInfo.three_class().names):
        return "three_class"
    return "watershed"


def instance_config_for(
    target: str,
    class_names: Sequence[str],
    membrane_class: Optional[int] = None,
    method: Optional[str] = None,
    **settings: Any,
) -> InstanceConfig:
    """The settings of a run's objects: ``method`` or the run's own route
    (:func:`default_instance_method`), the membrane route with its tuned :func:`membrane_config`;
    ``settings`` (``min_size``, ``threshold``...) override the defaults."""
    method = method or default_instance_method(target, class_names, membrane_class)
    if method == "membrane":
        return dataclasses.replace(membrane_config(membrane_class or 0), **settings)
    return InstanceConfig(method=method, **settings)


def otsu_watershed(image: np.ndarray, config: Optional[InstanceConfig] = None) -> np.ndarray:
    """The classical baseline, no learning: Otsu threshold, then distance-transform watershed.

    ``image``: ``(C, *S)`` or ``(*S)``; channels are averaged. The foreground is taken as the side
    of the threshold that covers less of the image (nuclei are the minority in most images,
    whether they are bright on dark or dark on bright).
    """
    config = config or InstanceConfig()
    grey = image.mean(axis=0) if image.ndim == 3 and image.shape[0] <= 4 else image
    grey = grey.astype(np.float32)
    if float(grey.max()) == float(grey.min()):
        return np.zeros(grey.shape, dtype=np.uint32)
    above = grey > threshold_otsu(grey)
    mask = above if above.mean() <= 0.5 else ~above
    probability = mask.astype(np.float32)
    return instances_from_foreground(probability, InstanceConfig(
        method="watershed", threshold=0.5, min_distance=config.min_distance,
        smoothing=config.smoothing, min_size=config.min_size, fill_holes=config.fill_holes,
    ))


def object_table(labels: np.ndarray, image: Optional[np.ndarray] = None) -> list[dict[str, Any]]:
    """One row per object of ``labels`` ``(*S)``: id, area (voxels in 3D), centroid, bounding box,
    equivalent diameter, solidity, eccentricity (2D only), and mean/max intensity per channel of
    ``image`` ``(C, *S)`` when given. Coordinates are in pixels, axis order ``(z,) y, x``.
    """
    labels = np.asarray(labels)
    axes = ("z", "y", "x")[-labels.ndim:]
    intensity = None
    if image is not None:
        image = np.asarray(image)
        channels = image if image.ndim == labels.ndim + 1 else image[None]
        if channels.shape[1:] != labels.shape:
            raise ValueError(
                f"image shape {image.shape} does not match the label image {labels.shape}"
            )
        intensity = np.moveaxis(channels, 0, -1)
    rows = []
    for region in regionprops(labels.astype(np.int64), intensity_image=intensity):
        row: dict[str, Any] = {"id": int(region.label), "area": int(region.area)}
        for axis, value in zip(axes, region.centroid):
            row[f"centroid_{axis}"] = round(float(value), 3)
        ndim = labels.ndim
        for i, axis in enumerate(axes):
            row[f"bbox_min_{axis}"] = int(region.bbox[i])
            row[f"bbox_max_{axis}"] = int(region.bbox[i + ndim])
        row["equivalent_diameter"] = round(float(region.equivalent_diameter_area), 3)
        try:
            row["solidity"] = round(float(region.solidity), 4)
        except (ValueError, IndexError):  # Qhull fails on flat or single-voxel objects
            row["solidity"] = float("nan")
        if ndim == 2:
            row["eccentricity"] = round(float(region.eccentricity), 4)
        if intensity is not None:
            means = np.atleast_1d(region.intensity_mean)
            maxes = np.atleast_1d(region.intensity_max)
            for c, (mean, peak) in enumerate(zip(means, maxes)):
                row[f"mean_intensity_{c}"] = round(float(mean), 4)
                row[f"max_intensity_{c}"] = round(float(peak), 4)
        rows.append(row)
    return rows


def write_object_table(path: Union[str, Path], rows: Sequence[dict[str, Any]]) -> None:
    """Write :func:`object_table` rows as CSV (atomically); a header-only file when there are none."""
    fields = list(rows[0]) if rows else ["id", "area"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def save_instance_labels(path: Union[str, Path], labels: np.ndarray) -> None:
    """Write a label image as TIFF (uint16 when it fits, else uint32), atomically."""
    import tifffile

    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")


def coco_annotations(
    labels: np.ndarray, image_id: int, *, first_annotation_id: int = 1, category_id: int = 1
) -> list[dict[str, Any]]:
    """COCO annotations (RLE mask, ``[x, y, w, h]`` box, area) for each object of a 2D label image."""
    from pycocotools import mask as mask_utils

    if labels.ndim != 2:
        raise ValueError(f"COCO annotations are 2D; got a label image of shape {labels.shape}")
    annotations = []
    for offset, region in enumerate(regionprops(labels.astype(np.int64))):
        binary = np.asfortranarray((labels == region.label).astype(np.uint8))
        rle = mask_utils.encode(binary)
        rle["counts"] = rle["counts"].decode("ascii")
        y0, x0, y1, x1 = region.bbox
        annotations.append({
            "id": first_annotation_id + offset,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": rle,
            "area": int(region.area),
            "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
            "iscrowd": 0,
        })
    return annotations


class CocoCollection:
    """COCO dataset built one image at a time (so label images need not stay in memory)."""

    def __init__(self, category: str = "object") -> None:
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.category = category

    def add(self, file_name: str, labels: np.ndarray) -> None:
        """Add one 2D label image ``(H, W)`` and its objects."""
        image_id = len(self.images) + 1
        annotations = coco_annotations(labels, image_id, first_annotation_id=len(self.annotations) + 1)
        self.images.append({"id": image_id, "file_name": file_name,
                            "height": int(labels.shape[0]), "width": int(labels.shape[1])})
        self.annotations += annotations

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": 1, "name": self.category}],
        }

    def write(self, path: Union[str, Path]) -> None:
        """Write the COCO JSON atomically."""
        atomic_write_json(path, self.to_dict())

    def write_merged(self, path: Union[str, Path]) -> None:
        """Write the COCO JSON atomically, keeping the images of a COCO file already at ``path`` that this
        collection does not have (by file name): ``predict`` run again into the same folder adds to it.

        A file there that is not a COCO file raises :class:`~unetkit.data.io.DataError` and is kept.
        """
        from .data.io import DataError

        path = Path(path)
        merged = CocoCollection(self.category)
        if path.exists():
            names = {image["file_name"] for image in self.images}
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
                by_image: dict[Any, list[dict[str, Any]]] = {}
                for annotation in old["annotations"]:
                    by_image.setdefault(annotation["image_id"], []).append(annotation)
                kept = [(image, by_image.get(image["id"], [])) for image in old["images"]
                        if image["file_name"] not in names]
            except (ValueError, TypeError, KeyError) as exc:
                raise DataError(
                    f"{path}: exists but is not a COCO file ({type(exc).__name__}: {exc}); the objects of "
                    "this run were not added to it; move it away and run again (finished images are skipped)"
                ) from exc
            for image, annotations in kept:
                merged._add_entry(image, annotations)
        by_id: dict[int, list[dict[str, Any]]] = {}
        for annotation in self.annotations:
            by_id.setdefault(annotation["image_id"], []).append(annotation)
        for image in self.images:
            merged._add_entry(image, by_id.get(image["id"], []))
        merged.write(path)

    def _add_entry(self, image: dict[str, Any], annotations: Sequence[dict[str, Any]]) -> None:
        """Add an image entry and its annotations taken from another collection, with new ids."""
        image_id = len(self.images) + 1
        self.images.append({**image, "id": image_id})
        for annotation in annotations:
            self.annotations.append({**annotation, "id": len(self.annotations) + 1, "image_id": image_id})


def coco_dataset(
    items: Sequence[tuple[str, np.ndarray]], category: str = "object"
) -> dict[str, Any]:
    """A COCO dataset dict from ``(file_name, label image (H, W))`` pairs."""
    collection = CocoCollection(category)
    for file_name, labels in items:
        collection.add(file_name, labels)
    return collection.to_dict()
