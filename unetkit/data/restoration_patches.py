"""Random training patches for restoration: an input patch, its target, and (Noise2Void) a loss mask.

How a pair is made depends on ``mode`` (:class:`~unetkit.config.RestorationConfig`):

- ``"pairs"``: crops at the same place of the input and the target (the input is bicubic-upscaled
  first when the target is ``scale`` times larger);
- ``"denoise"``: a clean crop is the target, the same crop with fresh noise the input;
- ``"super_resolve"``: a clean crop is the target, its bicubic downscale-then-upscale the input
  (the network learns the residual over the bicubic upscale, as VDSR);
- ``"noise2void"``: a noisy crop is the target, the same crop with a few pixels replaced by
  neighbours the input, and the loss counts those pixels only;
- ``"neighbor2neighbor"``: a noisy crop and the indices of its two random neighbour sub-images
  (:mod:`.neighbours`); the loss sub-samples the crop and the network's output of it.

Both are normalised with the same per-image offset and scale, those of the image as the predictor
will see it (noisy, downscaled: the input), so the network maps inputs to outputs on one intensity
scale and prediction normalises as training did. Augmentation: random flips and 90-degree rotations
(natural and microscopy images have no preferred orientation; intensity changes would alter the noise).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .blindspot import apply_blind_spot, blind_spot_mask
from .degrade import NoiseModel, downscale, upscale
from .io import DataError
from .neighbours import neighbour_pair_indices
from .normalize import NormalizeConfig, apply_normalization, normalization_params
from .pairs import ImagePair, intensity_max, read_checked_image

RESTORATION_MODES = ("pairs", "denoise", "super_resolve", "noise2void", "neighbor2neighbor")
#: The modes that learn from noisy images alone (no clean target).
SELF_SUPERVISED_MODES = ("noise2void", "neighbor2neighbor")


def dihedral(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip / 90-degree rotation of the last two axes of every array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


class RestorationPatchDataset(Dataset):
    """Items ``{"image": float32 (C, *P), "target": float32 (C, *P)[, "mask": float32 (*P)]}``, for
    Neighbor2Neighbor ``{"image": float32 (C, *P), "sub_a", "sub_b": int64 (*P // 2)}``.

    ``P`` is ``patch_size`` (at the target's resolution). Item ``i`` comes from image
    ``i % len(pairs)``, its randomness seeded by ``(seed, epoch, i)`` (see :meth:`set_epoch`).
    Images are read once and kept in memory.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        *,
        mode: str,
        patch_size: int,
        normalize: NormalizeConfig,
        noise: Optional[NoiseModel] = None,
        scale: int = 1,
        blind_spot: tuple[float, int, str] = (0.002, 2, "uniform"),
        augment: bool = True,
        seed: int = 0,
        patches_per_epoch: Optional[int] = None,
    ) -> None:
        if mode not in RESTORATION_MODES:
            raise ValueError(f"mode must be one of {RESTORATION_MODES}, got {mode!r}")
        if not pairs:
            raise DataError("no training images; check the dataset folder")
        if mode == "pairs" and any(p.target is None for p in pairs):
            raise DataError(f"{pairs[0].image}: mode 'pairs' needs DATA/inputs/ and DATA/targets/")
        if mode == "denoise" and noise is None:
            raise ValueError("mode 'denoise' needs a noise model")
        if mode == "neighbor2neighbor" and patch_size % 2:
            raise ValueError(
                f"Neighbor2Neighbor sub-samples cells of 2 px: the patch size {patch_size} must be even"
            )
        if mode == "super_resolve" and (scale < 2 or patch_size % scale):
            raise ValueError(
                f"super-resolution needs a scale >= 2 that divides the patch size {patch_size}, got {scale}"
            )
        self.pairs = list(pairs)
        self.mode = mode
        self.patch_size = patch_size
        self.normalize = normalize
        self.noise = noise
        self.scale = scale
        self.blind_spot = blind_spot
        self.augment = augment
        self.seed = seed
        self.patches_per_epoch = patches_per_epoch
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._cache: dict[int, tuple] = {}

    def set_epoch(self, epoch: int) -> None:
        """Draw different patches (and noise) in each epoch."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.patches_per_epoch if self.patches_per_epoch is not None else len(self.pairs)

    def _load(self, index: int) -> tuple:
        """(input, target or None, offset, scale, intensity max), the input at the target's resolution."""
        if index not in self._cache:
            pair = self.pairs[index]
            image = read_checked_image(pair.image)
            offset, norm_scale = normalization_params(self._as_predicted(image, index), self.normalize)
            target = None
            if self.mode == "pairs":
                target = read_checked_image(pair.target)
                if target.shape[1:] != image.shape[1:]:
                    image = upscale(image, target.shape[1] // image.shape[1])
            small = min(image.shape[1:])
            if small < self.patch_size:
                raise DataError(
                    f"{pair.image}: {small} px is smaller than the {self.patch_size}-px training patch; "
                    "lower data.patch_size or remove the image"
                )
            self._cache[index] = (image, target, offset, norm_scale, intensity_max(image))
        return self._cache[index]

    def _as_predicted(self, image: np.ndarray, index: int) -> np.ndarray:
        """The image as the predictor will see it (noisy, or downscaled), whose normalisation is then
        the one used at prediction."""
        if self.mode == "denoise":
            rng = np.random.default_rng([self.seed, index])
            return self.noise.apply(image, rng, data_max=intensity_max(image))
        if self.mode == "super_resolve":
            return downscale(image, self.scale)
        return image

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, int(self._epoch), index])
        image, target, offset, norm_scale, top = self._load(index % len(self.pairs))
        p = self.patch_size
        spatial = image.shape[1:]
        start = [int(rng.integers(0, s - p + 1)) for s in spatial[-2:]]
        lead = (slice(None),) * (image.ndim - 2)
        box = lead + (slice(start[0], start[0] + p), slice(start[1], start[1] + p))
        if len(spatial) == 3:  # 3D: a random slab of p planes too (volumes at least p deep)
            z = int(rng.integers(0, max(1, spatial[0] - p + 1)))
            box = (slice(None), slice(z, z + p)) + box[-2:]
        clean = image[box].astype(np.float32)
        arrays = [clean] if target is None else [clean, target[box].astype(np.float32)]
        if self.augment:
            arrays = dihedral(arrays, rng)
        item: dict[str, np.ndarray] = {}
        if self.mode == "pairs":
            inp, out = arrays
        elif self.mode == "denoise":
            out = arrays[0]
            inp = self.noise.apply(out, rng, data_max=top)
        elif self.mode == "super_resolve":
            out = arrays[0]
            inp = upscale(downscale(out, self.scale), self.scale)
        elif self.mode == "neighbor2neighbor":
            sub_a, sub_b = neighbour_pair_indices(arrays[0].shape[1:], rng)
            return {
                "image": torch.from_numpy(
                    np.ascontiguousarray(apply_normalization(arrays[0], offset, norm_scale), dtype=np.float32)
                ),
                "sub_a": torch.from_numpy(sub_a), "sub_b": torch.from_numpy(sub_b),
            }
        else:
            out = arrays[0]
            fraction, radius, how = self.blind_spot
            mask = blind_spot_mask(out.shape[1:], fraction, rng)
            out = apply_normalization(out, offset, norm_scale)
            inp = apply_blind_spot(out, mask, rng, radius=radius, mode=how)
            item["mask"] = mask.astype(np.float32)
            item["image"], item["target"] = inp, out
            return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in item.items()}
        item["image"] = apply_normalization(inp, offset, norm_scale)
        item["target"] = apply_normalization(out, offset, norm_scale)
        return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in item.items()}
