"""Training images of a generation (diffusion) run, and the patches it learns from.

Three layouts, by what the images are generated from:

* ``DATA/*.png`` (unconditional) or ``DATA/<class>/*.png`` (one subfolder per class; the folder
  names, sorted, become the classes);
* the same folders for a super-resolution stage (``condition = "low_res"``): each image is
  bicubic-downscaled by ``scale`` and upscaled again, and that blurry copy is the condition;
* ``DATA/images/`` + ``DATA/masks/`` (``condition = "mask"``): the segmentation layout; the mask's
  classes, one-hot, are the condition.

Images are mapped to [-1, 1] by a fixed intensity range (:func:`intensity_range`), the same for
every image, so that a sample can be written back on the data's own scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .classes import ClassInfo
from .degrade import downscale, upscale
from .io import DataError, PathLike, list_images, read_image
from .pairs import read_checked_image
from .samples import Sample, load_labels


@dataclass(frozen=True)
class GenerationItem:
    """One training image: its path, its class index (``None`` without classes) and, for
    mask-conditioned runs, its segmentation :class:`Sample` (image + mask)."""

    image: Path
    label: Optional[int] = None
    sample: Optional[Sample] = None

    @property
    def name(self) -> str:
        return self.image.stem if self.label is None else f"{self.image.parent.name}/{self.image.stem}"


def class_folders(root: PathLike) -> list[Path]:
    """The subfolders of ``root`` that hold images, sorted by name (a class-conditional run's classes)."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and list_images(p))


def find_generation_images(root: PathLike) -> tuple[list[GenerationItem], list[str]]:
    """The images of ``root`` and the class names (``[]`` when the images lie in ``root`` itself).

    Raises :class:`DataError` when ``root`` holds no image, or images both in ``root`` and in
    class subfolders (which of the two was meant cannot be told).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root} is not a folder: give a folder of images, or one subfolder of images per class"
        )
    top = list_images(root)
    folders = class_folders(root)
    if top and folders:
        raise DataError(
            f"{root} holds images ({top[0].name}, ...) and class subfolders ({folders[0].name}/, ...): "
            "put every image in a class subfolder (class-conditional) or none (unconditional)"
        )
    if folders:
        items = [GenerationItem(p, i) for i, folder in enumerate(folders) for p in list_images(folder)]
        return items, [f.name for f in folders]
    if not top:
        raise DataError(f"{root} holds no images (PNG, TIFF, JPEG, ...): nothing to learn to generate")
    return [GenerationItem(p) for p in top], []


def intensity_range(images: Sequence[np.ndarray]) -> tuple[float, float]:
    """The (low, high) intensities mapped to [-1, 1]: the dtype's range for integer images (0-255,
    0-65535), the images' own minimum and maximum for float images."""
    kinds = {im.dtype.kind for im in images}
    if kinds <= {"u", "i"}:
        widest = max(images, key=lambda im: np.iinfo(im.dtype).max).dtype
        return (0.0, float(np.iinfo(widest).max)) if widest.kind == "u" else (
            float(np.iinfo(widest).min), float(np.iinfo(widest).max))
    low = min(float(np.min(im)) for im in images)
    high = max(float(np.max(im)) for im in images)
    return low, high if high > low else low + 1.0


def to_unit_range(image: np.ndarray, intensity: Sequence[float]) -> np.ndarray:
    """``(C, *S)`` on the data's scale -> float32 in [-1, 1] (``intensity = (low, high)``)."""
    low, high = intensity
    return ((np.asarray(image, dtype=np.float32) - low) / (high - low) * 2.0 - 1.0).astype(np.float32)


def from_unit_range(image: np.ndarray, intensity: Sequence[float], dtype: np.dtype) -> np.ndarray:
    """The inverse of :func:`to_unit_range`, clipped, cast to ``dtype`` (rounded for integers)."""
    low, high = intensity
    x = (np.clip(np.asarray(image, dtype=np.float64), -1.0, 1.0) + 1.0) / 2.0 * (high - low) + low
    if np.dtype(dtype).kind in "ui":
        return np.rint(x).astype(dtype)
    return x.astype(dtype)


def low_res_condition(image: np.ndarray, scale: int) -> np.ndarray:
    """SR3's condition for ``(C, H, W)`` (H, W multiples of ``scale``): bicubic down by ``scale``, then up."""
    return upscale(downscale(image, scale), scale)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids ``(*S)`` -> float32 ``(num_classes, *S)`` in {0, 1} (ids out of range: all 0)."""
    out = np.zeros((num_classes, *labels.shape), dtype=np.float32)
    for k in range(num_classes):
        out[k] = labels == k
    return out


@dataclass
class LoadedImage:
    """A training image in memory: ``image`` ``(C, *S)`` in [-1, 1], its class, and its condition
    (a mask's one-hot classes ``(K, *S)``; ``None`` otherwise)."""

    name: str
    image: np.ndarray
    label: Optional[int]
    mask: Optional[np.ndarray] = None


def load_generation_item(
    item: GenerationItem, intensity: Sequence[float], classes: Optional[ClassInfo] = None
) -> LoadedImage:
    """Read one item (checked for NaN/inf; the mask decoded with ``classes``)."""
    raw = read_checked_image(item.image)
    mask = None
    if item.sample is not None:
        if classes is None:
            raise ValueError("mask-conditioned items need the masks' ClassInfo")
        mask = one_hot(load_labels(item.sample, classes, raw.shape[1:]), classes.num_classes)
    return LoadedImage(item.name, to_unit_range(raw, intensity), item.label, mask)


def read_images(items: Sequence[GenerationItem]) -> list[np.ndarray]:
    """The raw images of ``items`` (for :func:`intensity_range` and size checks), naming any broken file."""
    return [read_image(item.image) for item in items]


def generation_item(
    image: np.ndarray, mask: Optional[np.ndarray], label: Optional[int], *, condition: str, scale: int,
    num_classes: int,
) -> dict[str, torch.Tensor]:
    """One training item from a crop ``(C, *P)`` in [-1, 1] (and its one-hot mask ``(K, *P)``): the
    image, its class (``num_classes`` = none) and the condition image the run is conditioned on."""
    cond = low_res_condition(np.ascontiguousarray(image), scale) if condition == "low_res" else mask
    out = {
        "image": torch.from_numpy(np.ascontiguousarray(image)),
        "label": torch.tensor(num_classes if label is None else label),
    }
    if cond is not None and condition in ("low_res", "mask"):
        out["cond_image"] = torch.from_numpy(np.ascontiguousarray(cond, dtype=np.float32))
    return out


def centre_crop(image: LoadedImage, size: int) -> LoadedImage:
    """The centred ``size`` crop of a loaded image (and of its mask)."""
    spatial = image.image.shape[1:]
    window = (slice(None), *(slice((s - size) // 2, (s - size) // 2 + size) for s in spatial))
    mask = image.mask[window] if image.mask is not None else None
    return LoadedImage(image.name, np.ascontiguousarray(image.image[window]), image.label, mask)


class GenerationPatchDataset(Dataset):
    """Random ``patch_size`` crops of the loaded images, drawn anew each epoch (``set_epoch``).

    Item: ``{"image": (C, *P) in [-1, 1], "label": () long (the class; ``num_classes`` = none),
    "cond_image": (K, *P)}`` (the condition only for ``condition`` ``"low_res"`` or ``"mask"``).
    ``flips``: random flips along every axis (off for classes whose meaning depends on the
    orientation, such as digits).
    """

    def __init__(
        self,
        images: Sequence[LoadedImage],
        *,
        patch_size: int,
        condition: str,
        scale: int,
        num_classes: int,
        flips: bool,
        seed: int,
        patches_per_epoch: int,
    ) -> None:
        small = [im.name for im in images if min(im.image.shape[1:]) < patch_size]
        if small:
            raise DataError(
                f"{len(small)} images are smaller than the patch size {patch_size} (e.g. {small[0]}): "
                f"lower --data.patch-size to at most {min(min(im.image.shape[1:]) for im in images)}"
            )
        self.images = list(images)
        self.patch_size = patch_size
        self.condition = condition
        self.scale = scale
        self.num_classes = num_classes
        self.flips = flips
        self.seed = seed
        self.length = patches_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        item = self.images[int(rng.integers(len(self.images)))]
        spatial = item.image.shape[1:]
        starts = [int(rng.integers(s - self.patch_size + 1)) for s in spatial]
        window = (slice(None), *(slice(s, s + self.patch_size) for s in starts))
        image = item.image[window]
        cond = item.mask[window] if item.mask is not None else None
        if self.flips:
            axes = [a + 1 for a in range(len(spatial)) if rng.random() < 0.5]
            if axes:
                image = np.flip(image, axes)
                cond = np.flip(cond, axes) if cond is not None else None
        return generation_item(
            image, cond, item.label, condition=self.condition, scale=self.scale, num_classes=self.num_classes
        )
