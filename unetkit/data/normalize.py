"""Per-image intensity normalisation, chosen in the config and saved with the model.

- ``percentile``: ``(x - p_low) / (p_high - p_low)`` per channel (robust for microscopy: a few hot
  pixels do not set the range; values outside [0, 1] are kept, not clipped);
- ``zscore``: ``(x - mean) / std`` per channel;
- ``fixed``: ``(x - min_value) / (max_value - min_value)``, by default 0-255 -> 0-1 (photos).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MODES = ("percentile", "zscore", "fixed")
_EPS = 1e-6


@dataclass
class NormalizeConfig:
    """How to scale image intensities; ``low``/``high`` are percentiles for ``mode="percentile"``."""

    mode: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    min_value: float = 0.0
    max_value: float = 255.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown normalisation mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.mode == "percentile" and not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}")
        if self.mode == "fixed" and not self.max_value > self.min_value:
            raise ValueError(f"fixed range needs max > min, got {self.min_value}..{self.max_value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormalizeConfig:
        return cls(**{k: data[k] for k in ("mode", "low", "high", "min_value", "max_value") if k in data})


def normalization_params(image: np.ndarray, config: NormalizeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(offset, scale)``, float32 ``(C,)``: the normalised image is ``(x - offset) / scale``.

    Normalisation is affine per channel, so it commutes with (linear or cubic) resampling: the
    dataset computes it once on the whole image and applies it to each patch.
    """
    x = np.asarray(image)
    n = x.shape[0]
    if config.mode == "fixed":
        offset = np.full(n, config.min_value, np.float32)
        scale = np.full(n, config.max_value - config.min_value, np.float32)
        return offset, scale
    flat = x.reshape(n, -1)
    if config.mode == "percentile":
        offset, high = np.percentile(flat, [config.low, config.high], axis=1)
        scale = high - offset
    else:
        offset, scale = flat.mean(axis=1, dtype=np.float64), flat.std(axis=1, dtype=np.float64)
    return offset.astype(np.float32), np.maximum(scale, _EPS).astype(np.float32)


def apply_normalization(image: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(image - offset) / scale`` per channel for ``(C, *S)``; float32."""
    shape = (-1,) + (1,) * (np.ndim(image) - 1)
    return (np.asarray(image, dtype=np.float32) - offset.reshape(shape)) / scale.reshape(shape)


def normalize_image(image: np.ndarray, config: NormalizeConfig) -> np.ndarray:
    """Normalise a channel-first image ``(C, *S)`` per channel; returns float32 of the same shape."""
    return apply_normalization(image, *normalization_params(image, config))
