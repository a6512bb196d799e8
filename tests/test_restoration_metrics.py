"""Restoration scores: PSNR / SSIM hand cases, border crop, the BT.601 Y channel and shape checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unetkit.restoration_metrics import crop_border, luminance, psnr, restoration_scores, ssim


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(20, 235, shape)


@pytest.mark.parametrize("error", [1.0, 5.0, 40.0])
def test_psnr_of_constant_error(error: float):
    truth = _image((3, 16, 16))
    assert psnr(truth + error, truth, 255.0) == pytest.approx(10 * math.log10(255.0**2 / error**2))


def test_psnr_uses_the_given_data_range():
    truth = _image((16, 16)) / 255.0
    assert psnr(truth + 0.01, truth, 1.0) == pytest.approx(40.0)


def test_psnr_identical_is_inf():
    image = _image((16, 16)).astype(np.uint8)
    assert psnr(image, image, 255.0) == math.inf


def test_ssim_identical_is_one_and_noise_lowers_it():
    truth = _image((3, 32, 32))
    assert ssim(truth, truth, 255.0) == pytest.approx(1.0)
    noisy = truth + np.random.default_rng(1).normal(0, 20, truth.shape)
    noisier = truth + np.random.default_rng(1).normal(0, 60, truth.shape)
    assert 0.0 < ssim(noisier, truth, 255.0) < ssim(noisy, truth, 255.0) < 1.0
    assert ssim(noisy[0], truth[0], 255.0) < 1.0


def test_multichannel_ssim_is_mean_over_channels():
    truth = _image((2, 24, 24))
    pred = truth + np.random.default_rng(2).normal(0, 30, truth.shape)
    expected = np.mean([ssim(pred[c], truth[c], 255.0) for c in range(2)])
    assert ssim(pred, truth, 255.0) == pytest.approx(expected)


def test_crop_border_shape():
    image = np.zeros((3, 20, 30))
    assert crop_border(image, 4).shape == (3, 12, 22)
    assert crop_border(image[0], 0).shape == (20, 30)
    with pytest.raises(ValueError):
        crop_border(image, 10)


def test_luminance_of_grey_rgb():
    grey = np.full((3, 4, 4), 100.0)
    np.testing.assert_allclose(luminance(grey), 16 + 219 * 100 / 255, rtol=1e-5)
    assert luminance(grey).shape == (4, 4)
    single = _image((1, 4, 4))
    np.testing.assert_allclose(luminance(single), single[0], rtol=1e-6)
    with pytest.raises(ValueError):
        luminance(np.zeros((2, 4, 4)))


def test_restoration_scores_y_channel_and_border():
    truth = _image((3, 32, 32))
    pred = truth + 10.0
    pred[:, :2] = 0.0  # damage confined to the border that the protocol crops
    all_channels = restoration_scores(pred, truth)
    scores = restoration_scores(pred, truth, border=2, y_channel=True)
    assert set(scores) == {"psnr", "ssim"}
    # A +10 shift on every channel shifts Y by 10 * 219 / 255.
    assert scores["psnr"] == pytest.approx(20 * math.log10(255.0 / (10 * 219 / 255)), rel=1e-5)
    assert scores["psnr"] > all_channels["psnr"]
    assert restoration_scores(truth, truth, y_channel=True) == {"psnr": math.inf, "ssim": pytest.approx(1.0)}


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match=r"\(3, 16, 16\).*\(3, 16, 17\)"):
        psnr(np.zeros((3, 16, 16)), np.zeros((3, 16, 17)), 255.0)
    with pytest.raises(ValueError, match="shape"):
        ssim(np.zeros((16, 16)), np.zeros((1, 16, 16)), 255.0)
    with pytest.raises(ValueError, match="shape"):
        restoration_scores(np.zeros((3, 16, 16)), np.zeros((1, 16, 16)))
