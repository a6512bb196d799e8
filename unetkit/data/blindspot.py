"""Noise2Void blind-spot masking (Krull et al. 2019), with the N2V2 replacements (Höck et al. 2022).

A self-supervised denoiser is trained to predict a few masked pixels of a noisy patch from their
surroundings: :func:`blind_spot_mask` picks the pixels (stratified, one per box, as N2V does) and
:func:`apply_blind_spot` overwrites them in the network's input, either with a random neighbour that is
never the pixel itself (``"uniform"``; N2V's original sampler could pick the centre, which leaks the
noise to be predicted) or with the median of the neighbourhood without the centre (``"median"``).

Patches are channel-first ``(C, *S)`` with ``S`` 2D ``(H, W)`` or 3D ``(D, H, W)``; masks are ``(*S)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BLIND_SPOT_MODES = ("uniform", "median")


def _strata(size: int, side: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Starts and widths of the boxes along one axis: integer cuts of a grid of step ``side`` (> 1) at a
    random offset, so each box is ``floor(side)`` or ``ceil(side)`` pixels and there are ``size / side``
    boxes per axis on average (boxes cut by the patch edge are kept; their pixel may fall outside).
    """
    steps = np.arange(-1, math.ceil(size / side) + 1)
    cuts = np.floor(rng.uniform(0.0, side) + side * steps).astype(np.int64)
    starts, ends = cuts[:-1], cuts[1:]
    inside = (ends > 0) & (starts < size)
    return starts[inside], (ends - starts)[inside]


def blind_spot_mask(shape: Sequence[int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Bool ``(*S)`` of the pixels to mask in a 2D or 3D patch of spatial shape ``S``.

    Stratified as in N2V: the patch is tiled with boxes of about ``1 / fraction`` pixels (side
    ``fraction ** (-1 / d)``) and one random pixel is taken in each box, so about ``fraction`` of the pixels
    are masked, spread evenly; at least one pixel is always masked.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"expected a 2D or 3D spatial shape of positive sizes, got {shape}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"blind-spot fraction must be in (0, 1), got {fraction}")
    side = fraction ** (-1.0 / len(shape))
    strata = [_strata(size, side, rng) for size in shape]
    boxes = np.meshgrid(*(np.arange(len(starts)) for starts, _ in strata), indexing="ij")
    coords = []
    keep = np.ones(boxes[0].size, bool)
    for (starts, widths), box, size in zip(strata, boxes, shape):
        box = box.ravel()
        coord = starts[box] + rng.integers(0, widths[box])
        keep &= (coord >= 0) & (coord < size)
        coords.append(coord)
    mask = np.zeros(shape, bool)
    mask[tuple(c[keep] for c in coords)] = True
    if not mask.any():
        mask[tuple(rng.integers(0, s) for s in shape)] = True
    return mask


def _random_neighbours(
    centres: np.ndarray, shape: tuple[int, ...], radius: int, rng: np.random.Generator
) -> np.ndarray:
    """For centres ``(d, n)``, a uniformly random other pixel ``(d, n)`` of each one's window of
    ``radius``, cut to the patch; draws that hit the centre are redrawn.
    """
    size = np.array(shape).reshape(-1, 1)
    low = np.maximum(centres - radius, 0)
    high = np.minimum(centres + radius, size - 1)
    sources = centres.copy()
    todo = np.arange(centres.shape[1])
    while todo.size:
        draw = rng.integers(low[:, todo], high[:, todo] + 1)
        sources[:, todo] = draw
        todo = todo[(draw == centres[:, todo]).all(axis=0)]
    return sources


def _window_medians(patch: np.ndarray, centres: np.ndarray, radius: int) -> np.ndarray:
    """Per channel, the median of each centre's window without the centre, cut to the patch:
    ``(C, n)`` for centres ``(d, n)``.
    """
    d = centres.shape[0]
    size = np.array(patch.shape[1:]).reshape(-1, 1, 1)
    grid = np.meshgrid(*[np.arange(-radius, radius + 1)] * d, indexing="ij")
    offsets = np.stack(grid).reshape(d, -1)
    offsets = offsets[:, (offsets != 0).any(axis=0)]
    positions = centres[:, :, None] + offsets[:, None, :]
    inside = ((positions >= 0) & (positions < size)).all(axis=0)
    values = patch[(slice(None), *np.clip(positions, 0, size - 1))]
    return np.nanmedian(np.where(inside, values, np.nan), axis=-1)


def apply_blind_spot(
    patch: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    radius: int = 2,
    mode: str = "uniform",
) -> np.ndarray:
    """A float32 copy of ``patch`` ``(C, *S)`` with every pixel of ``mask`` ``(*S)`` replaced in all channels.

    ``"uniform"``: by the value of a random pixel of the ``(2 * radius + 1) ** d`` window around it,
    never the pixel itself; ``"median"``: by the median of that window without the centre. Windows at the
    patch edge are cut to the pixels inside the patch.
    """
    if mode not in BLIND_SPOT_MODES:
        raise ValueError(f"unknown blind-spot mode {mode!r}; use one of {', '.join(BLIND_SPOT_MODES)}")
    if radius < 1:
        raise ValueError(f"blind-spot radius must be >= 1, got {radius}")
    x = np.asarray(patch, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if x.shape[1:] != mask.shape or mask.ndim not in (2, 3):
        raise ValueError(
            f"expected a (C, *S) patch and an (*S) mask with S 2D or 3D, got {x.shape} and {mask.shape}"
        )
    if mask.size < 2:
        raise ValueError(f"a patch of spatial shape {mask.shape} has no neighbour to take a value from")
    out = x.copy()
    centres = np.stack(np.nonzero(mask))
    if mode == "uniform":
        sources = _random_neighbours(centres, mask.shape, radius, rng)
        out[(slice(None), *centres)] = x[(slice(None), *sources)]
    else:
        out[(slice(None), *centres)] = _window_medians(x, centres, radius)
    return out
