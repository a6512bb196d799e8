"""Microscopy-like synthetic cells: the embedded default that ``make demo`` and the tests train on.

Cells are ellipses (ellipsoids in 3D) of varied size, shape and brightness, placed in clusters so
that they touch, overlap (the later cell occludes the earlier) and crowd; interiors are textured
and their rims slightly darker, the illumination is uneven, and the image is blurred and carries
Poisson (shot) and Gaussian (read) noise. Every array is reproducible from the seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from scipy import ndimage

from ..utils.atomic import atomic_path
from .instances import object_borders, three_class_from_instances

PathLike = Union[str, "os.PathLike[str]"]
Seed = Union[int, Sequence[int]]


@dataclass
class SyntheticCells:
    """One synthetic image with its targets; ``S`` is the spatial shape ``(H, W)`` or ``(D, H, W)``."""

    image: np.ndarray  # float32 (C, *S), roughly in [0, 1]
    instances: np.ndarray  # int32 (*S), 0 = background, 1..N cells
    semantic: np.ndarray  # uint8 (*S), 0 background / 1 cell
    three_class: np.ndarray  # uint8 (*S), 0 background / 1 interior / 2 border


def _random_rotation(rng: np.random.Generator, dims: int) -> np.ndarray:
    if dims == 2:
        angle = rng.uniform(0.0, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, -s], [s, c]])
    q, r = np.linalg.qr(rng.normal(size=(dims, dims)))
    return q * np.sign(np.diag(r))


def _draw_cells(shape: tuple[int, ...], rng: np.random.Generator, n_cells: int,
                radius: tuple[float, float]) -> np.ndarray:
    dims = len(shape)
    labels = np.zeros(shape, dtype=np.int32)
    n_clusters = max(1, n_cells // 5)
    clusters = rng.uniform(0, 1, size=(n_clusters, dims)) * np.array(shape)
    for k in range(1, n_cells + 1):
        axes = rng.uniform(*radius) * rng.uniform(0.7, 1.0, size=dims)
        if rng.random() < 0.7:
            centre = clusters[rng.integers(n_clusters)] + rng.normal(scale=1.6 * axes.max(), size=dims)
        else:
            centre = rng.uniform(0, 1, size=dims) * np.array(shape)
        rot = _random_rotation(rng, dims)
        reach = axes.max()
        lo = np.maximum(np.floor(centre - reach).astype(int), 0)
        hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        rel = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
        rel = [g - c for g, c in zip(rel, centre)]
        q = sum((sum(rot[j, i] * rel[i] for i in range(dims)) / axes[j]) ** 2 for j in range(dims))
        box = labels[tuple(slice(a, b) for a, b in zip(lo, hi))]
        box[q <= 1.0] = k
    # Occlusion can leave a cell in several pieces or none: renumber visible cells 1..N.
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(n_cells + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def make_synthetic_cells(
    shape: Union[int, Sequence[int]],
    *,
    seed: Seed,
    dims: int = 2,
    n_cells: int | None = None,
    radius: tuple[float, float] = (7.0, 14.0),
    channels: int = 1,
    blur: float = 1.0,
    photons: float = 80.0,
    read_noise: float = 0.03,
) -> SyntheticCells:
    """Generate one image of cells.

    Args:
        shape: spatial size, an int for a square/cube of ``dims`` dimensions or a tuple.
        seed: an int or a sequence of ints (e.g. ``(seed, index)``) for ``numpy.random.default_rng``.
        n_cells: number of cells drawn (default: about 40% of the area covered, before overlaps).
        radius: range of the cell semi-axes in pixels.
        channels: image channels (each channel a different mix of cell stain and background).
        blur, photons, read_noise: Gaussian blur sigma, Poisson photon count at intensity 1,
            and Gaussian noise standard deviation.
    """
    shape = (int(shape),) * dims if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    dims = len(shape)
    rng = np.random.default_rng(seed)
    if n_cells is None:
        unit = np.pi if dims == 2 else 4.0 / 3.0 * np.pi
        mean_volume = unit * (0.85 * np.mean(radius)) ** dims
        n_cells = max(1, int(round(0.4 * np.prod(shape) / mean_volume)))
    instances = _draw_cells(shape, rng, n_cells, radius)
    n = int(instances.max())
    three = three_class_from_instances(instances)

    brightness = np.concatenate([[0.0], rng.uniform(0.45, 1.0, size=n)]).astype(np.float32)
    cells = brightness[instances] * (1.0 + 0.18 * _smooth_noise(rng, shape, 1.5))
    cells *= np.where(object_borders(instances, 1), np.float32(0.75), np.float32(1.0))
    background = 0.08 + 0.02 * _smooth_noise(rng, shape, 4.0)
    grids = np.meshgrid(*[np.linspace(-0.5, 0.5, s, dtype=np.float32) for s in shape], indexing="ij")
    direction = rng.normal(size=dims)
    direction /= np.linalg.norm(direction)
    illumination = 1.0 + 0.5 * sum(d * g for d, g in zip(direction, grids))

    image = np.empty((channels,) + shape, dtype=np.float32)
    for c in range(channels):
        stain = 1.0 if c == 0 else rng.uniform(0.4, 1.0)
        clean = (stain * cells + background) * illumination
        clean = ndimage.gaussian_filter(clean, blur) if blur > 0 else clean
        noisy = rng.poisson(np.clip(clean, 0, None) * photons) / photons
        noisy = noisy + rng.normal(scale=read_noise, size=shape)
        image[c] = np.clip(noisy, 0.0, 1.0)
    return SyntheticCells(
        image=image,
        instances=instances,
        semantic=(instances > 0).astype(np.uint8),
        three_class=three,
    )


def write_synthetic_dataset(root: PathLike, n_images: int, *, size: int = 256, seed: int = 0,
                            dims: int = 2) -> Path:
    """Write ``n_images`` synthetic cell images as a dataset folder and return ``root``.

    2D: ``images/cell_000.png`` (uint8), ``masks/cell_000.png`` (0/255) and ``instances/cell_000.tif``
    (uint16 ids). 3D: the images and masks are TIFF stacks ``(D, H, W)``.
    """
    import tifffile
    from PIL import Image

    root = Path(root)
    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        cells = make_synthetic_cells(size, seed=(seed, i), dims=dims)
        image = np.round(cells.image[0] * 255).astype(np.uint8)
        mask = cells.semantic * np.uint8(255)
        name = f"cell_{i:03d}"
        if dims == 2:
            with atomic_path(root / "images" / f"{name}.png") as tmp:
                Image.fromarray(image).save(tmp)
            with atomic_path(root / "masks" / f"{name}.png") as tmp:
                Image.fromarray(mask).save(tmp)
        else:
            with atomic_path(root / "images" / f"{name}.tif") as tmp:
                tifffile.imwrite(tmp, image, compression="zlib", photometric="minisblack")
            with atomic_path(root / "masks" / f"{name}.tif") as tmp:
                tifffile.imwrite(tmp, mask, compression="zlib", photometric="minisblack")
        with atomic_path(root / "instances" / f"{name}.tif") as tmp:
            instances = cells.instances.astype(np.uint16)
            tifffile.imwrite(tmp, instances, compression="zlib", photometric="minisblack")
    return root


def make_synthetic_membranes(size: int = 128, *, n_cells: int = 30, width: int = 3,
                             seed: Seed = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM-like 2D data: Voronoi cells outlined by dark membranes ``width`` pixels wide.

    Returns ``(image, mask, cells)``: the image float32 ``(H, W)`` in [0, 1] (textured cells, dark
    membranes, blur and noise), the mask uint8 ``(H, W)`` (1 cell interior, 0 membrane, ISBI 2012's
    encoding) and the cell ids int32 ``(H, W)`` (0 on the membranes).
    """
    rng = np.random.default_rng(seed)
    centres = np.zeros((size, size), dtype=bool)
    centres[rng.integers(0, size, n_cells), rng.integers(0, size, n_cells)] = True
    _, (rows, cols) = ndimage.distance_transform_edt(~centres, return_indices=True)
    nearest = ndimage.label(centres)[0][rows, cols]
    edges = (ndimage.maximum_filter(nearest, size=2) != ndimage.minimum_filter(nearest, size=2))
    membrane = ndimage.binary_dilation(edges, iterations=max(0, width // 2)) if width > 1 else edges
    cells = np.where(membrane, 0, nearest).astype(np.int32)
    image = 0.7 + 0.15 * _smooth_noise(rng, (size, size), 2.0)
    image[membrane] = 0.15
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(0.0, 0.04, image.shape)
    return np.clip(image, 0, 1).astype(np.float32), (~membrane).astype(np.uint8), cells
