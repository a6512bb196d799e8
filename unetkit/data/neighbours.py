"""Neighbor2Neighbor sub-sampling (Huang et al., CVPR 2021): two half-resolution images from one noisy one.

The image is cut into cells of 2 pixels along each axis (2x2 in 2D, 2x2x2 in 3D). In each cell one
pixel goes to the first sub-image and one of its direct neighbours inside the cell to the second, chosen
at random per cell. The two sub-images show the same scene with independent noise (for noise that is
independent from pixel to pixel), so a network trained to map the first onto the second learns to
denoise, and every pixel of the sub-image carries the loss (Noise2Void's blind spots: a few per cent).

:func:`neighbour_pair_indices` draws the choice (numpy, seeded by the caller), :func:`take_subimage`
applies it to a batch (torch, so that the network's own output can be sub-sampled the same way).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def neighbour_pair_indices(shape: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into an image of spatial shape ``S`` of the two sub-images, each int64 ``(*S // 2)``.

    ``a[g]`` is a random pixel of cell ``g``; ``b[g]`` the pixel next to it along one random axis, in the
    same cell, so ``a != b`` everywhere and both lie in the cell. A trailing odd row or column is unused.
    """
    shape = tuple(int(s) for s in shape)
    cells = tuple(s // 2 for s in shape)
    if min(cells) < 1:
        raise ValueError(f"an image of shape {shape} is too small to sub-sample: at least 2 px per axis")
    dims = len(shape)
    first = rng.integers(0, 2, size=(dims, *cells))
    second = first.copy()
    axis = rng.integers(0, dims, size=cells)
    for k in range(dims):
        second[k] = np.where(axis == k, 1 - first[k], first[k])
    grid = np.indices(cells) * 2
    a = np.ravel_multi_index(tuple(grid + first), shape)
    b = np.ravel_multi_index(tuple(grid + second), shape)
    return a.astype(np.int64), b.astype(np.int64)


def take_subimage(images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Sub-sample ``images`` ``(N, C, *S)`` at ``indices`` ``(N, *s)`` (flat into ``S``): ``(N, C, *s)``."""
    n, c = images.shape[:2]
    flat = images.reshape(n, c, -1)
    picked = torch.gather(flat, 2, indices.reshape(n, 1, -1).expand(n, c, -1))
    return picked.reshape(n, c, *indices.shape[1:])
