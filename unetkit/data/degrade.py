"""Degradations of clean images, for training restoration models and for benchmarks.

- Noise (:class:`NoiseModel`, written as a spec such as ``gaussian:25``, ``gaussian:0-55``, ``poisson:30``
  or ``poisson-gaussian:30,10``), drawn from a generator seeded per image name (:func:`image_rng`) so a
  benchmark image always gets the same noise;
- bicubic resizing (Pillow's Keys cubic, antialiased when downscaling) for super-resolution, with the
  ``modcrop`` convention of the literature;
- RGB <-> YCbCr (ITU-R BT.601, as MATLAB's ``rgb2ycbcr``), for scoring super-resolution on Y.

Images are channel-first ``(C, H, W)`` on their own intensity scale (0-255 for photos); results are
float32 and never clipped.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

NOISE_KINDS = ("gaussian", "poisson", "poisson_gaussian")
_SPEC_EXAMPLES = (
    "gaussian:25, gaussian:0-55 (blind: sigma drawn per image), poisson:30 (peak photons) "
    "or poisson-gaussian:30,10 (peak, sigma)"
)
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_SIGMA_RE = re.compile(rf"^\s*({_NUMBER})\s*(?:-\s*({_NUMBER}))?\s*$")
_PEAK_RE = re.compile(rf"^\s*({_NUMBER})\s*$")

# BT.601 for 0-255 RGB, as MATLAB's rgb2ycbcr: ycc = _YCC_MATRIX @ rgb / 255 + _YCC_OFFSET.
_YCC_MATRIX = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float64
)
_YCC_OFFSET = np.array([16.0, 128.0, 128.0])
_YCC_INVERSE = np.linalg.inv(_YCC_MATRIX)


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True)
class NoiseModel:
    """Additive Gaussian, Poisson (shot) or Poisson-then-Gaussian noise.

    ``sigma`` is the Gaussian standard deviation range on the image's intensity scale (a fixed sigma is
    ``(s, s)``; a range makes the model blind: one sigma is drawn uniformly per call). ``peak`` is the
    Poisson photon count at intensity ``data_max`` (smaller is noisier).
    """

    kind: str
    sigma: tuple[float, float] = (0.0, 0.0)
    peak: Optional[float] = None

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {self.kind!r}; use one of {', '.join(NOISE_KINDS)}")
        if len(self.sigma) != 2:
            raise ValueError(f"sigma must be a (low, high) pair, got {self.sigma!r}")
        low, high = (float(s) for s in self.sigma)
        object.__setattr__(self, "sigma", (low, high))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"sigma must be finite, got {self.sigma!r}")
        if low < 0:
            raise ValueError(f"sigma must be >= 0, got {low:g}")
        if low > high:
            raise ValueError(f"sigma range must have low <= high, got {low:g}-{high:g}")
        if self.kind == "gaussian":
            if self.peak is not None:
                raise ValueError("Gaussian noise takes no peak; use poisson-gaussian for both")
            return
        if self.peak is None or not math.isfinite(self.peak) or self.peak <= 0:
            raise ValueError(f"Poisson noise needs a peak > 0, got {self.peak!r}")
        object.__setattr__(self, "peak", float(self.peak))
        if self.kind == "poisson" and high > 0:
            raise ValueError("pure Poisson noise takes no sigma; use poisson-gaussian for both")

    @property
    def blind(self) -> bool:
        """True when sigma is a range (drawn per call), as for blind denoisers."""
        return self.sigma[0] != self.sigma[1]

    @property
    def spec(self) -> str:
        """The canonical spec, which :func:`parse_noise` reads back (``gaussian:0-55``)."""
        low, high = self.sigma
        sigma = f"{_format_number(low)}-{_format_number(high)}" if self.blind else _format_number(low)
        if self.kind == "gaussian":
            return f"gaussian:{sigma}"
        assert self.peak is not None
        if self.kind == "poisson":
            return f"poisson:{_format_number(self.peak)}"
        return f"poisson-gaussian:{_format_number(self.peak)},{sigma}"

    def apply(self, image: np.ndarray, rng: np.random.Generator, data_max: float = 255.0) -> np.ndarray:
        """A noisy float32 copy of ``image`` (any shape), not clipped.

        Poisson noise counts ``max(x, 0) * peak / data_max`` photons and scales them back, so a pixel at
        ``data_max`` has a signal-to-noise ratio of ``sqrt(peak)``.
        """
        if data_max <= 0:
            raise ValueError(f"data_max must be > 0, got {data_max}")
        x = np.asarray(image, dtype=np.float64)
        if self.kind != "gaussian":
            assert self.peak is not None
            x = rng.poisson(np.clip(x, 0.0, None) * (self.peak / data_max)) * (data_max / self.peak)
        if self.kind != "poisson":
            low, high = self.sigma
            sigma = rng.uniform(low, high) if self.blind else low
            x = x + rng.normal(0.0, sigma, size=x.shape)
        return x.astype(np.float32)


def _parse_sigma(text: str) -> tuple[float, float]:
    match = _SIGMA_RE.match(text)
    if match is None:
        raise ValueError(f"expected a sigma such as 25 or 0-55, got {text.strip()!r}")
    low = float(match.group(1))
    return low, float(match.group(2)) if match.group(2) is not None else low


def _parse_peak(text: str) -> float:
    match = _PEAK_RE.match(text)
    if match is None:
        raise ValueError(f"expected a peak such as 30, got {text.strip()!r}")
    return float(match.group(1))


def parse_noise(spec: str) -> NoiseModel:
    """The :class:`NoiseModel` of a spec: ``gaussian:25``, ``gaussian:0-55``, ``poisson:30``,
    ``poisson-gaussian:30,10`` (peak, then sigma or a sigma range; ``poisson_gaussian`` also accepted).

    Raises ``ValueError`` quoting the spec for unknown kinds, missing or negative numbers, ``low > high``
    and ``peak <= 0``.
    """
    kind, sep, args = spec.partition(":")
    kind = kind.strip().lower().replace("-", "_")
    try:
        if not sep:
            raise ValueError("missing ':' and numbers")
        if kind == "gaussian":
            model = NoiseModel("gaussian", sigma=_parse_sigma(args))
        elif kind == "poisson":
            model = NoiseModel("poisson", peak=_parse_peak(args))
        elif kind == "poisson_gaussian":
            peak, comma, sigma = args.partition(",")
            if not comma:
                raise ValueError("poisson-gaussian needs a peak and a sigma, separated by ','")
            model = NoiseModel("poisson_gaussian", sigma=_parse_sigma(sigma), peak=_parse_peak(peak))
        else:
            raise ValueError(f"unknown noise kind {kind!r}")
    except ValueError as exc:
        raise ValueError(f"bad noise spec {spec!r}: {exc}; use e.g. {_SPEC_EXAMPLES}") from None
    return model


def image_rng(name: str, seed: int = 0) -> np.random.Generator:
    """A generator seeded by ``seed`` and the image name, so the same image always gets the same noise."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _resize_channel(channel: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(H, W)`` -> float32 ``(h, w)`` through a Pillow float ("F") image."""
    image = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))
    return np.asarray(image.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)


def bicubic_resize(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize ``(C, H, W)`` (any numeric dtype) to float32 ``(C, h, w)`` for ``shape = (h, w)``.

    Each channel goes through Pillow's float ("F") bicubic: Keys' cubic with a = -0.5, antialiased when
    downscaling, the closest to MATLAB's ``imresize`` that the super-resolution literature uses. Values
    are not clipped (cubic overshoots at edges).
    """
    x = np.asarray(image)
    if x.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {x.shape}")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"expected a target (h, w) of positive sizes, got {tuple(shape)}")
    h, w = (int(s) for s in shape)
    return np.stack([_resize_channel(c, h, w) for c in x])


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the last two axes of ``(..., H, W)`` to multiples of ``scale``, keeping the top-left corner."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    h, w = image.shape[-2:]
    return image[..., : h - h % scale, : w - w % scale]


def downscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic ``(C, H, W)`` -> float32 ``(C, H // scale, W // scale)`` of the modcropped image."""
    x = modcrop(np.asarray(image), scale)
    h, w = x.shape[-2:]
    return bicubic_resize(x, (h // scale, w // scale))


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic ``(C, H, W)`` -> float32 ``(C, H * scale, W * scale)``."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    h, w = np.shape(image)[-2:]
    return bicubic_resize(image, (h * scale, w * scale))


def _check_three_channels(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, dtype=np.float64)
    if x.ndim < 1 or x.shape[0] != 3:
        raise ValueError(f"expected a 3-channel (3, H, W) image, got shape {x.shape}")
    return x


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB ``(3, H, W)`` on 0-255 -> float32 YCbCr ``(3, H, W)``, BT.601 as MATLAB (Y in 16..235)."""
    x = _check_three_channels(rgb)
    ycc = np.tensordot(_YCC_MATRIX / 255.0, x, axes=1) + _YCC_OFFSET.reshape((3,) + (1,) * (x.ndim - 1))
    return ycc.astype(np.float32)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """The exact inverse of :func:`rgb_to_ycbcr`: float32 RGB ``(3, H, W)`` on 0-255, not clipped."""
    x = _check_three_channels(ycc) - _YCC_OFFSET.reshape((3,) + (1,) * (np.ndim(ycc) - 1))
    return np.tensordot(_YCC_INVERSE * 255.0, x, axes=1).astype(np.float32)
