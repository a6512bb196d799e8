"""The U-Net paper's border weight map (Ronneberger et al. 2015, eq. 2).

``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` where ``d1`` and ``d2`` are the
distances to the nearest and second-nearest object. The border term is applied to background
pixels (the gaps between objects, as in the paper's Fig. 3d); inside objects the weight is ``w_c``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
from scipy import ndimage

ClassWeights = Union[str, Sequence[float], None]

# Objects farther than REACH_SIGMAS * sigma from a pixel are not measured: the term they would add
# is below w0 * exp(-REACH_SIGMAS**2 / 2) = w0 * 3.7e-6, far below any class weight.
REACH_SIGMAS = 5.0


@dataclass
class BorderWeightConfig:
    """Parameters of :func:`border_weight_map` (pixels; the paper uses w0=10, sigma about 5)."""

    w0: float = 10.0
    sigma: float = 5.0
    class_weights: Optional[str] = "balanced"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BorderWeightConfig:
        return cls(**{k: data[k] for k in ("w0", "sigma", "class_weights") if k in data})


def class_weight_map(labels: np.ndarray, class_weights: ClassWeights = "balanced",
                     ignore_index: Optional[int] = None) -> np.ndarray:
    """Per-pixel class weight ``w_c`` for class ids ``(*S)``; float32 ``(*S)``.

    ``"balanced"``: ``w_c = N / (K * n_c)`` from the class frequencies of this image (``K`` classes
    present, ``N`` pixels), so the mean of ``w_c`` over the image is 1 and every class present
    contributes the same total weight. A sequence gives the weight of each class id; ``None`` is 1.
    Ignored pixels get weight 0.
    """
    labels = np.asarray(labels)
    valid = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
    if class_weights is None:
        out = np.ones(labels.shape, np.float32)
    elif isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(f"class_weights must be 'balanced', a sequence or None, got {class_weights!r}")
        counts = np.bincount(labels[valid].ravel().astype(np.int64))
        present = counts > 0
        table = np.zeros(len(counts), np.float32)
        table[present] = valid.sum() / (present.sum() * counts[present])
        out = table[np.where(valid, labels, 0).astype(np.int64)]
    else:
        table = np.asarray(class_weights, dtype=np.float32)
        out = table[np.where(valid, labels, 0).astype(np.int64)]
    return np.where(valid, out, np.float32(0)).astype(np.float32)


def nearest_two_distances(instance_labels: np.ndarray, reach: float,
                          spacing: Optional[Sequence[float]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``d1 <= d2`` (float32 ``(*S)``) from each pixel to the nearest and second-nearest object.

    Each object's Euclidean distance transform is computed only in its bounding box grown by
    ``reach``; distances beyond ``reach`` are reported as ``inf`` (exact below it).
    """
    labels = np.asarray(instance_labels)
    d1 = np.full(labels.shape, np.inf, np.float32)
    d2 = np.full(labels.shape, np.inf, np.float32)
    step = np.ones(labels.ndim) if spacing is None else np.asarray(spacing, float)
    margin = np.ceil(reach / step).astype(int)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(s.start - m, 0), min(s.stop + m, n)) for s, m, n in zip(box, margin, labels.shape)
        )
        dist = ndimage.distance_transform_edt(labels[grown] != index, sampling=step).astype(np.float32)
        dist[dist > reach] = np.inf
        b1, b2 = d1[grown], d2[grown]
        b2[...] = np.minimum(b2, np.maximum(b1, dist))
        b1[...] = np.minimum(b1, dist)
    return d1, d2


def border_weight_map(
    instance_labels: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: ClassWeights = "balanced",
    *,
    class_labels: Optional[np.ndarray] = None,
    ignore_index: Optional[int] = None,
    spacing: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """The paper's weight map for instance ids ``(*S)`` (0 = background); float32 ``(*S)``.

    Args:
        instance_labels: one id per object, 0 for background (2D ``(H, W)`` or 3D ``(D, H, W)``).
        w0, sigma: height and width (pixels) of the border term.
        class_weights: ``w_c``, see :func:`class_weight_map` (``"balanced"``: mean 1 over the image).
        class_labels: semantic class ids for ``w_c`` (default: background 0 / object 1); ignored
            pixels (``ignore_index``) get weight 0.
        spacing: voxel size per axis for anisotropic volumes (distances in units of the first axis'
            pixels are wrong otherwise); ``sigma`` is in the same units.

    Values are finite and positive outside ignored pixels. A single object adds no border term
    (there is no second-nearest object).
    """
    labels = np.asarray(instance_labels)
    if labels.dtype.kind not in "iub":
        raise ValueError(f"instance labels must be integers, got dtype {labels.dtype}")
    semantic = (labels > 0).astype(np.int64) if class_labels is None else np.asarray(class_labels)
    weights = class_weight_map(semantic, class_weights, ignore_index)
    if w0 <= 0 or labels.max(initial=0) == 0:
        return weights
    d1, d2 = nearest_two_distances(labels, REACH_SIGMAS * sigma, spacing)
    border = np.float32(w0) * np.exp(-((d1 + d2) ** 2) / np.float32(2.0 * sigma**2))
    background = labels == 0
    if ignore_index is not None:
        background &= semantic != ignore_index
    weights[background] += border[background]
    return weights
