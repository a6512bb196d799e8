"""Random, augmented training patches drawn from whole segmentation images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .classes import ClassInfo
from .flows import flows_from_instances
from .instances import MAP_TARGETS, TARGETS, distance_from_instances, three_class_from_instances
from .io import (
    DataError,
    read_image,
)
from .normalize import NormalizeConfig, apply_normalization, normalization_params
from .samples import Sample, load_instances, load_labels
from .scale import median_object_diameter, resize_spatial, scale_factor, scaled_shape
from .transforms import AugmentConfig, Augmenter
from .weights import BorderWeightConfig, border_weight_map

PathLike = Union[str, "os.PathLike[str]"]


# -- patches -------------------------------------------------------------------------------------
@dataclass
class _Cached:
    image: np.ndarray  # raw (C, *S), as read
    offset: np.ndarray  # (C,)
    scale: np.ndarray  # (C,)
    labels: np.ndarray  # (*S) small integer dtype
    weight: Optional[np.ndarray]  # (*S) float32
    foreground: Optional[np.ndarray]  # flat indices of foreground pixels (int64), lazily
    instances: Optional[np.ndarray] = None  # (*S) int32 object ids, for the flows and distance targets


def _as_tuple(size: Union[int, Sequence[int]], dims: int, what: str) -> tuple[int, ...]:
    if isinstance(size, (int, np.integer)):
        return (int(size),) * dims
    out = tuple(int(s) for s in size)
    if len(out) != dims:
        raise ValueError(f"{what} {out} has {len(out)} axes but the images are {dims}D")
    return out


class PatchDataset(Dataset):
    """Random (augmented) training patches from whole images.

    Items are dicts ``{"image": float32 (C, *P), "mask": int64 (*O), "weight": float32 (*O)}`` (``weight``
    only with ``weight_map``; with ``target="flows"`` or ``"distance"`` the mask is the foreground and
    ``"maps"``, float32 ``(M, *O)``, the regression maps of the patch's objects after augmentation: the
    ``D`` flow components (:mod:`unetkit.data.flows`) or the normalised distance to the outline
    (:func:`unetkit.data.instances.distance_from_instances`)); ``P`` is ``patch_size`` and ``O`` is
    ``output_size`` (the centre of the patch a valid-padding network predicts; default ``P``). Item ``i``
    comes from image ``i % len(samples)``; the randomness is seeded by ``(seed, epoch, i)`` (see
    :meth:`set_epoch`), so a run is reproducible whatever the number of loader workers. Images, labels and
    weight maps are read once and cached in memory per worker process: use ``persistent_workers=True`` so
    the caches survive from one epoch to the next. ``object_diameter``: resize each image so that its
    objects' median diameter is this many pixels (:mod:`unetkit.data.scale`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: ClassInfo,
        *,
        patch_size: Union[int, Sequence[int]],
        normalize: NormalizeConfig,
        augment: Optional[AugmentConfig] = None,
        target: str = "semantic",
        weight_map: Optional[BorderWeightConfig] = None,
        foreground_oversample: float = 0.0,
        seed: int = 0,
        patches_per_epoch: Optional[int] = None,
        output_size: Optional[Union[int, Sequence[int]]] = None,
        pages_as_channels: bool = False,
        object_diameter: Optional[float] = None,
    ) -> None:
        if not samples:
            raise DataError("no training samples; check the dataset folder")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if not 0.0 <= foreground_oversample <= 1.0:
            raise ValueError(f"foreground_oversample is a probability, got {foreground_oversample}")
        unlabelled = [s.image for s in samples if not s.labelled]
        if unlabelled:
            raise DataError(f"{unlabelled[0]}: no mask for this training image; add it or remove the image")
        self.samples = list(samples)
        self.classes = classes
        self.normalize = normalize
        self.target = target
        self.weight_map = weight_map
        self.foreground_oversample = foreground_oversample
        self.seed = seed
        # In shared memory so that persistent DataLoader workers see set_epoch() too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.patches_per_epoch = patches_per_epoch
        self.pages_as_channels = pages_as_channels
        if object_diameter is not None and object_diameter <= 0:
            raise ValueError(f"object_diameter must be a positive number of pixels, got {object_diameter}")
        self.object_diameter = object_diameter
        first = read_image(self.samples[0].image, pages_as_channels=pages_as_channels)
        self.dims = first.ndim - 1
        self.in_channels = first.shape[0]
        self.patch_size = _as_tuple(patch_size, self.dims, "patch_size")
        self.output_size = (
            self.patch_size if output_size is None else _as_tuple(output_size, self.dims, "output_size")
        )
        if any(o > p or (p - o) % 2 for p, o in zip(self.patch_size, self.output_size)):
            raise ValueError(
                f"output_size {self.output_size} must be centred inside patch_size {self.patch_size}"
            )
        self.augmenter = Augmenter(augment, self.dims)
        self._cache: dict[int, _Cached] = {}

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw different patches in each epoch; call it before iterating the DataLoader for that epoch
        (loader workers, persistent or not, see the new value)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.patches_per_epoch if self.patches_per_epoch is not None else len(self.samples)

    def _load(self, index: int) -> _Cached:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        sample = self.samples[index]
        image = read_image(sample.image, pages_as_channels=self.pages_as_channels)
        if image.ndim - 1 != self.dims or image.shape[0] != self.in_channels:
            raise DataError(
                f"{sample.image}: shape {image.shape} does not match the first image "
                f"({self.in_channels} channels, {self.dims}D); run `unetkit check-data`"
            )
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            raise DataError(f"{sample.image}: NaN/inf values; replace them or re-export the image")
        labels = load_labels(sample, self.classes, image.shape[1:])
        instances = None
        if self.target != "semantic" or self.weight_map is not None or self.object_diameter:
            instances = load_instances(sample, labels, self.classes)
        if self.object_diameter:
            factor = scale_factor(median_object_diameter(instances), self.object_diameter)
            shape = scaled_shape(labels.shape, factor)
            image = resize_spatial(image, shape, labels=False)
            labels = resize_spatial(labels, shape, labels=True)
            instances = resize_spatial(instances, shape, labels=True)
        if self.target != "semantic":
            ignored = labels == self.classes.ignore_index if self.classes.ignore_index is not None else None
            target = three_class_from_instances(instances) if self.target == "three_class" else instances > 0
            labels = target.astype(np.int64)
            if ignored is not None:
                labels[ignored] = self.classes.ignore_index
        weight = None
        if self.weight_map is not None:
            weight = border_weight_map(
                instances, self.weight_map.w0, self.weight_map.sigma, self.weight_map.class_weights,
                class_labels=labels, ignore_index=self.classes.ignore_index,
            )
        offset, scale = normalization_params(image, self.normalize)
        fits16 = labels.min(initial=0) >= -(1 << 15) and labels.max(initial=0) < 1 << 15
        small = np.int16 if fits16 else np.int32
        cached = _Cached(image, offset, scale, labels.astype(small), weight, None,
                         instances.astype(np.int32) if self.target in MAP_TARGETS else None)
        self._cache[index] = cached
        return cached

    def _origin(self, rng: np.random.Generator, cached: _Cached) -> np.ndarray:
        spatial = np.array(cached.labels.shape)
        out = np.array(self.output_size)
        margin = (np.array(self.patch_size) - out) // 2
        top = spatial - out  # highest output-window origin inside the image (negative: image smaller)
        if self.foreground_oversample > 0 and rng.random() < self.foreground_oversample:
            if cached.foreground is None:
                valid = (cached.labels > 0) & (cached.labels != (self.classes.ignore_index or 0))
                cached.foreground = np.flatnonzero(valid)
            if cached.foreground.size:
                point = np.array(np.unravel_index(rng.choice(cached.foreground), spatial))
                jitter = rng.integers(-(out // 4), out // 4 + 1)
                start = np.clip(point - out // 2 + jitter, np.minimum(top, 0), np.maximum(top, 0))
                return start - margin
        start = np.where(top >= 0, [rng.integers(0, t + 1) if t >= 0 else 0 for t in top], top // 2)
        return start - margin

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        cached = self._load(index % len(self.samples))
        origin = self._origin(rng, cached)
        draw = self.augmenter.draw_spatial(rng, self.patch_size)
        weights = [cached.weight] if cached.weight is not None else []
        sources = [cached.labels] + ([cached.instances] if cached.instances is not None else [])
        image, labels, weights = self.augmenter.extract(
            draw, origin, self.patch_size, cached.image, sources, weights, self.output_size
        )
        image = self.augmenter.apply_intensity(rng, apply_normalization(image, cached.offset, cached.scale))
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "mask": torch.from_numpy(labels[0].astype(np.int64)),
        }
        if cached.instances is not None:
            maps = flows_from_instances if self.target == "flows" else distance_from_instances
            item["maps"] = torch.from_numpy(maps(labels[1]))
        if weights:
            item["weight"] = torch.from_numpy(np.ascontiguousarray(weights[0], dtype=np.float32))
        return item
