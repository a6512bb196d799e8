"""Patch extraction and augmentation, applied jointly to an image and its label/weight maps.

All spatial transforms (flips, 90-degree rotations, rotation, scaling, translation and the paper's
elastic deformation) are composed into ONE coordinate map from patch pixels to source pixels, and
each array is resampled once with :func:`scipy.ndimage.map_coordinates`: the image with linear (or
cubic) interpolation, label maps with nearest neighbour (class ids are never blended), weight maps
linearly. Pixels outside the source are mirrored, so images smaller than the patch are mirror-padded.
When only flips, 90-degree rotations and whole-pixel shifts are drawn, the patch is cut out without
any interpolation.

The elastic field follows Ronneberger et al. (2015): random displacements on a coarse grid (3x3,
standard deviation 10 pixels) interpolated to every pixel with a cubic spline.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, Optional, Sequence

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

Range = tuple[float, float]


@dataclass
class AugmentConfig:
    """Probability (``*_p``, per patch) and range of every augmentation.

    Spatial: ``flip_p`` per axis; ``rot90_p``; ``rotate_range`` in degrees (uniform in
    ``[-r, r]``); ``scale_range`` (log-uniform zoom factor, > 1 enlarges); ``translate_range`` as a
    fraction of the patch size; ``elastic_grid`` control points per axis with displacement standard
    deviation ``elastic_sigma`` pixels. Intensity (in normalised units): additive ``brightness_range``,
    multiplicative ``contrast_range`` around the mean, ``gamma_range`` on the min-max rescaled patch,
    Gaussian noise of standard deviation up to ``noise_std``, Gaussian blur with ``blur_sigma``.
    ``image_order``: interpolation order for the image (1 linear, 3 cubic). ``inplane_only_3d``:
    for volumes, rotations and elastic displacements stay in the (H, W) plane (anisotropic stacks).
    """

    flip_p: float = 0.5
    rot90_p: float = 0.5
    rotate_p: float = 0.3
    rotate_range: float = 180.0
    scale_p: float = 0.3
    scale_range: Range = (0.8, 1.25)
    translate_p: float = 0.3
    translate_range: float = 0.05
    elastic_p: float = 0.5
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    brightness_p: float = 0.3
    brightness_range: float = 0.1
    contrast_p: float = 0.3
    contrast_range: Range = (0.75, 1.33)
    gamma_p: float = 0.3
    gamma_range: Range = (0.7, 1.5)
    noise_p: float = 0.2
    noise_std: float = 0.05
    blur_p: float = 0.2
    blur_sigma: Range = (0.5, 1.5)
    image_order: int = 1
    inplane_only_3d: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_p") and not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{f.name} is a probability, got {value}")
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        if self.image_order not in (0, 1, 3):
            raise ValueError(f"augment.image_order must be 0, 1 or 3, got {self.image_order}")
        if self.elastic_grid < 2:
            raise ValueError(f"augment.elastic_grid must be >= 2 points per axis, got {self.elastic_grid}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown augmentation setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def none(cls) -> AugmentConfig:
        """Every probability 0: patches are only cut out (and mirror-padded)."""
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name.endswith("_p")})

    @classmethod
    def all_on(cls) -> AugmentConfig:
        """Every probability 1 (the throughput benchmark and ``show-augmentations --all``)."""
        return cls(**{f.name: 1.0 for f in fields(cls) if f.name.endswith("_p")})


@dataclass
class SpatialDraw:
    """One random spatial transform: source = matrix @ (p + elastic(p)) + centre + shift."""

    matrix: np.ndarray  # (dims, dims)
    shift: np.ndarray  # (dims,) pixels
    elastic: Optional[np.ndarray]  # (dims, *P) pixels, or None
    exact: bool  # only flips / 90-degree turns / whole-pixel shifts: no interpolation needed


def reflect_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """Map integer positions onto ``0..n-1`` by mirroring without repeating the edge (``dcb|abcd|cba``)."""
    if n == 1:
        return np.zeros_like(indices)
    period = 2 * n - 2
    folded = np.abs(indices) % period
    return np.where(folded >= n, period - folded, folded)


@lru_cache(maxsize=64)
def _spline_basis(points: int, size: int) -> np.ndarray:
    """``(size, points)``: cubic-spline interpolation weights from ``points`` evenly spaced knots."""
    knots = np.linspace(0.0, size - 1.0, points)
    bc = "natural" if points >= 3 else "not-a-knot"
    if points == 2:
        t = np.linspace(0.0, 1.0, size)
        return np.stack([1.0 - t, t], axis=1)
    return CubicSpline(knots, np.eye(points), bc_type=bc)(np.arange(size, dtype=float))


def elastic_field(rng: np.random.Generator, shape: Sequence[int], grid: int, sigma: float,
                  axes: Sequence[int]) -> np.ndarray:
    """A smooth random displacement field ``(dims, *shape)`` (pixels) displacing only along ``axes``."""
    dims = len(shape)
    field = np.zeros((dims,) + tuple(shape), np.float32)
    bases = [_spline_basis(grid, s) for s in shape]
    letters = "abc"[:dims]
    spec = ",".join(f"{o}{k}" for o, k in zip(letters, "ijk")) + "," + "ijk"[:dims] + "->" + letters
    for axis in axes:
        coarse = rng.normal(scale=sigma, size=(grid,) * dims)
        field[axis] = np.einsum(spec, *bases, coarse, optimize=True)
    return field


def _rotation(dims: int, angle: float, axis: Optional[np.ndarray] = None) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if dims == 2:
        return np.array([[c, -s], [s, c]])
    if axis is None:  # rotate the (H, W) plane of a (D, H, W) volume
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + s * k + (1.0 - c) * (k @ k)


class Augmenter:
    """Draws and applies random augmentations to 2D ``(C, H, W)`` or 3D ``(C, D, H, W)`` images."""

    def __init__(self, config: Optional[AugmentConfig], dims: int) -> None:
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self.config = config or AugmentConfig.none()
        self.dims = dims

    def _plane_axes(self) -> tuple[int, int]:
        return (self.dims - 2, self.dims - 1)

    def draw_spatial(self, rng: np.random.Generator, patch_shape: Sequence[int]) -> SpatialDraw:
        cfg, dims = self.config, self.dims
        matrix = np.eye(dims)
        shift = np.zeros(dims)
        exact = True
        for axis in range(dims):
            if rng.random() < cfg.flip_p:
                matrix[:, axis] *= -1.0
        a, b = self._plane_axes()
        if rng.random() < cfg.rot90_p and patch_shape[a] == patch_shape[b]:
            turn = np.eye(dims)
            k = int(rng.integers(1, 4))
            turn[np.ix_([a, b], [a, b])] = np.round(_rotation(2, k * math.pi / 2))
            matrix = turn @ matrix
        if rng.random() < cfg.rotate_p:
            angle = math.radians(rng.uniform(-cfg.rotate_range, cfg.rotate_range))
            axis = None
            if dims == 3 and not cfg.inplane_only_3d:
                axis = rng.normal(size=3)
                axis /= np.linalg.norm(axis)
            matrix = _rotation(dims, angle, axis) @ matrix
            exact = False
        if rng.random() < cfg.scale_p:
            lo, hi = cfg.scale_range
            matrix = matrix / math.exp(rng.uniform(math.log(lo), math.log(hi)))
            exact = False
        if rng.random() < cfg.translate_p:
            shift = np.round(rng.uniform(-1, 1, size=dims) * cfg.translate_range * np.asarray(patch_shape))
            if dims == 3 and cfg.inplane_only_3d:
                shift[0] = 0.0
        elastic = None
        if rng.random() < cfg.elastic_p and cfg.elastic_sigma > 0:
            axes = range(1, dims) if dims == 3 and cfg.inplane_only_3d else range(dims)
            elastic = elastic_field(rng, patch_shape, cfg.elastic_grid, cfg.elastic_sigma, list(axes))
            exact = False
        return SpatialDraw(matrix=matrix, shift=shift, elastic=elastic, exact=exact)

    def extract(
        self,
        draw: SpatialDraw,
        origin: Sequence[int],
        patch_shape: Sequence[int],
        image: np.ndarray,
        labels: Sequence[np.ndarray] = (),
        weights: Sequence[np.ndarray] = (),
        output_shape: Optional[Sequence[int]] = None,
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Cut the patch whose untransformed top-left corner is ``origin`` out of the source arrays.

        ``image`` is ``(C, *S)``; ``labels`` (nearest neighbour) and ``weights`` (linear) are ``(*S)``.
        Returns the image patch ``(C, *P)`` and the label/weight patches ``(*O)``, the centre
        ``output_shape`` part of the patch (the whole patch when ``None``).
        """
        patch_shape = tuple(int(p) for p in patch_shape)
        out_shape = patch_shape if output_shape is None else tuple(int(o) for o in output_shape)
        crop = tuple(slice((p - o) // 2, (p - o) // 2 + o) for p, o in zip(patch_shape, out_shape))
        if draw.exact:
            return self._extract_exact(draw, origin, patch_shape, crop, image, labels, weights)
        centre = np.asarray(origin, float) + (np.asarray(patch_shape) - 1) / 2.0 + draw.shift
        grid = _centred_grid(patch_shape)
        offsets = grid if draw.elastic is None else grid + draw.elastic
        coords = np.tensordot(draw.matrix, offsets, axes=1)
        coords += centre.reshape((-1,) + (1,) * len(patch_shape))
        out_image = np.stack([_resample(ch, coords, self.config.image_order) for ch in image])
        inner = coords[(slice(None),) + crop]
        return (
            out_image.astype(np.float32, copy=False),
            [_resample(lab, inner, 0) for lab in labels],
            [_resample(w, inner, 1).astype(np.float32, copy=False) for w in weights],
        )

    def _extract_exact(self, draw, origin, patch_shape, crop, image, labels, weights):
        # Source index along each patch axis: the matrix is a signed permutation here.
        perm = np.argmax(np.abs(draw.matrix), axis=0)
        source_extent = [0] * self.dims
        for out_axis, src_axis in enumerate(perm):
            source_extent[src_axis] = patch_shape[out_axis]
        centre = np.asarray(origin, float) + (np.asarray(patch_shape) - 1) / 2.0 + draw.shift
        starts = np.round(centre - (np.asarray(source_extent) - 1) / 2.0).astype(int)
        spatial = image.shape[1:]
        index = [reflect_indices(np.arange(s, s + e), n) for s, e, n in zip(starts, source_extent, spatial)]

        def cut(array: np.ndarray, lead: int) -> np.ndarray:
            window = array[(slice(None),) * lead + np.ix_(*index)]
            window = np.transpose(window, tuple(range(lead)) + tuple(lead + int(p) for p in perm))
            flips = [lead + i for i in range(self.dims) if draw.matrix[perm[i], i] < 0]
            return np.flip(window, axis=flips) if flips else window

        return (
            np.ascontiguousarray(cut(image, 1), dtype=np.float32),
            [np.ascontiguousarray(cut(lab, 0)[crop]) for lab in labels],
            [np.ascontiguousarray(cut(w, 0)[crop], dtype=np.float32) for w in weights],
        )

    def apply_intensity(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """Random brightness, contrast, gamma, noise and blur on an image patch ``(C, *P)`` (float32)."""
        cfg = self.config
        x = image
        if rng.random() < cfg.brightness_p:
            x = x + np.float32(rng.uniform(-cfg.brightness_range, cfg.brightness_range))
        if rng.random() < cfg.contrast_p:
            mean = x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
            x = (x - mean) * np.float32(rng.uniform(*cfg.contrast_range)) + mean
        if rng.random() < cfg.gamma_p:
            lo, hi = float(x.min()), float(x.max())
            if hi > lo:
                x = ((x - lo) / (hi - lo)) ** np.float32(rng.uniform(*cfg.gamma_range)) * (hi - lo) + lo
        if rng.random() < cfg.noise_p:
            std = rng.uniform(0.0, cfg.noise_std)
            x = x + rng.normal(scale=std, size=x.shape).astype(np.float32)
        if rng.random() < cfg.blur_p:
            sigma = rng.uniform(*cfg.blur_sigma)
            x = ndimage.gaussian_filter(x, sigma=(0.0,) + (sigma,) * self.dims)
        return x.astype(np.float32, copy=False)

    def __call__(
        self,
        rng: np.random.Generator,
        image: np.ndarray,
        labels: Sequence[np.ndarray] = (),
        weights: Sequence[np.ndarray] = (),
        *,
        origin: Sequence[int],
        patch_shape: Sequence[int],
        output_shape: Optional[Sequence[int]] = None,
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Draw a random transform, cut the patch at ``origin`` and apply the intensity changes."""
        draw = self.draw_spatial(rng, patch_shape)
        out_image, out_labels, out_weights = self.extract(
            draw, origin, patch_shape, image, labels, weights, output_shape
        )
        return self.apply_intensity(rng, out_image), out_labels, out_weights


@lru_cache(maxsize=16)
def _centred_grid_cached(shape: tuple[int, ...]) -> np.ndarray:
    axes = [np.arange(s, dtype=np.float32) - (s - 1) / 2.0 for s in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    grid.setflags(write=False)
    return grid


def _centred_grid(shape: tuple[int, ...]) -> np.ndarray:
    """``(dims, *shape)`` pixel offsets from the patch centre."""
    return _centred_grid_cached(tuple(shape))


def _resample(array: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    """Sample ``array`` ``(*S)`` at ``coords`` ``(dims, *P)``, mirroring outside the array.

    Only the window the coordinates reach is gathered (mirrored) first, so cubic prefiltering and
    memory traffic scale with the patch, not with the source image.
    """
    pad = 0 if order == 0 else order // 2 + 1
    lo = np.floor(coords.reshape(coords.shape[0], -1).min(axis=1)).astype(int) - pad
    hi = np.ceil(coords.reshape(coords.shape[0], -1).max(axis=1)).astype(int) + pad + 1
    index = [reflect_indices(np.arange(a, b), n) for a, b, n in zip(lo, hi, array.shape)]
    window = array[np.ix_(*index)]
    local = coords - lo.reshape((-1,) + (1,) * (coords.ndim - 1)).astype(np.float32)
    if order == 0:
        idx = tuple(np.clip(np.rint(c).astype(np.intp), 0, n - 1) for c, n in zip(local, window.shape))
        return window[idx]
    src = window if window.dtype.kind == "f" else window.astype(np.float32)
    return ndimage.map_coordinates(src, local, order=order, mode="nearest", prefilter=order > 1)
