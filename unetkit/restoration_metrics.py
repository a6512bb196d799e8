"""Scores of restored images (denoising, super-resolution): PSNR and SSIM.

Images are ``(H, W)`` or channel-first ``(C, H, W)``, prediction first, truth second, with the data
range given explicitly (255 for 8-bit photos). The super-resolution protocol scores the Y channel of
BT.601 YCbCr (:func:`luminance`) with ``scale`` pixels cropped from each border.

SSIM follows Wang et al. (2004) as the literature reports it: an 11x11 Gaussian window of sigma 1.5 and
population covariances, averaged over channels for ``(C, H, W)``.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .data.degrade import rgb_to_ycbcr


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} does not match truth shape {t.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (C, H, W) images, got shape {p.shape}")
    return p, t


def psnr(pred: np.ndarray, truth: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels; ``inf`` for identical images."""
    p, t = _check_pair(pred, truth)
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(t, p, data_range=data_range))


def ssim(pred: np.ndarray, truth: np.ndarray, data_range: float) -> float:
    """Mean structural similarity (1 for identical images); needs ``H, W >= 11`` for the window."""
    p, t = _check_pair(pred, truth)
    return float(
        structural_similarity(
            t,
            p,
            data_range=data_range,
            channel_axis=0 if p.ndim == 3 else None,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def crop_border(image: np.ndarray, border: int) -> np.ndarray:
    """``(..., H, W)`` -> ``(..., H - 2 * border, W - 2 * border)``."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    h, w = np.shape(image)[-2:]
    if 2 * border >= min(h, w):
        raise ValueError(f"cropping {border} pixels from each side of a {h}x{w} image leaves nothing")
    return image[..., border : h - border, border : w - border]


def luminance(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` on 0-255 -> float32 ``(H, W)``: BT.601 Y (16..235) for RGB, the channel for grey."""
    x = np.asarray(image)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected a (1, H, W) or (3, H, W) image, got shape {x.shape}")
    return rgb_to_ycbcr(x)[0] if x.shape[0] == 3 else x[0].astype(np.float32)


def restoration_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    data_range: float = 255.0,
    border: int = 0,
    y_channel: bool = False,
) -> dict[str, float]:
    """``{"psnr": ..., "ssim": ...}`` of ``pred`` against ``truth`` (``(H, W)`` or ``(C, H, W)``).

    ``border`` pixels are cropped from each side first; with ``y_channel`` both scores are taken on the
    :func:`luminance` of ``(C, H, W)`` images (the super-resolution protocol, with ``border = scale``),
    otherwise on all channels.
    """
    p, t = _check_pair(pred, truth)
    if border:
        p, t = crop_border(p, border), crop_border(t, border)
    if y_channel:
        p, t = luminance(p), luminance(t)
    return {"psnr": psnr(p, t, data_range), "ssim": ssim(p, t, data_range)}
