"""Degradations: seeded noise and its statistics, noise specs, bicubic resizing, BT.601 YCbCr."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.data.degrade import (
    NoiseModel,
    bicubic_resize,
    downscale,
    image_rng,
    modcrop,
    parse_noise,
    rgb_to_ycbcr,
    upscale,
    ycbcr_to_rgb,
)


def test_image_rng_seeded_per_name():
    model = parse_noise("gaussian:25")
    image = np.zeros((1, 16, 16), np.float32)
    a = model.apply(image, image_rng("baboon.png"))
    assert np.array_equal(a, model.apply(image, image_rng("baboon.png")))
    assert not np.array_equal(a, model.apply(image, image_rng("lenna.png")))
    assert not np.array_equal(a, model.apply(image, image_rng("baboon.png", seed=1)))


def test_gaussian_statistics():
    image = np.full((512, 512), 100, np.uint8)
    noisy = NoiseModel("gaussian", sigma=(25.0, 25.0)).apply(image, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == image.shape
    noise = noisy - 100.0
    assert abs(noise.std() - 25.0) < 0.02 * 25.0
    assert abs(noise.mean()) < 0.5
    assert noisy.min() < 0 or noisy.max() > 100 + 3 * 25  # not clipped: tails reach past 3 sigma


def test_blind_sigma_drawn_in_range_and_varies():
    model = parse_noise("gaussian:10-40")
    assert model.blind and not parse_noise("gaussian:25").blind
    rng = np.random.default_rng(1)
    image = np.zeros((128, 128), np.float32)
    stds = [float(model.apply(image, rng).std()) for _ in range(20)]
    assert all(9.0 < s < 41.0 for s in stds)
    assert max(stds) - min(stds) > 10.0


@pytest.mark.parametrize("level", [20.0, 200.0])
def test_poisson_mean_and_variance(level: float):
    peak, data_max = 30.0, 255.0
    image = np.full((256, 256), level, np.float32)
    noisy = NoiseModel("poisson", peak=peak).apply(image, np.random.default_rng(2), data_max=data_max)
    assert abs(noisy.mean() - level) < 0.02 * level
    assert abs(noisy.var() / (level * data_max / peak) - 1.0) < 0.05


def test_poisson_gaussian_adds_both_variances():
    image = np.full((256, 256), 100.0, np.float32)
    noisy = parse_noise("poisson-gaussian:30,10").apply(image, np.random.default_rng(3))
    assert abs(noisy.var() / (100.0 * 255.0 / 30.0 + 10.0**2) - 1.0) < 0.05


@pytest.mark.parametrize(
    "spec",
    [
        "gaussian:-5",
        "gaussian:55-0",
        "poisson:0",
        "poisson:-3",
        "speckle:3",
        "gaussian",
        "gaussian:",
        "poisson:abc",
        "poisson-gaussian:30",
    ],
)
def test_parse_noise_errors_quote_spec_and_examples(spec: str):
    with pytest.raises(ValueError) as info:
        parse_noise(spec)
    message = str(info.value)
    assert repr(spec) in message and "gaussian:0-55" in message and "poisson-gaussian:30,10" in message


def test_parse_noise_messages_name_the_problem():
    for spec, words in [
        ("gaussian:-5", ">= 0"),
        ("gaussian:55-0", "low <= high"),
        ("poisson:0", "peak > 0"),
        ("speckle:3", "unknown noise kind"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_noise(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "gaussian:25",
        "gaussian:0-55",
        "gaussian:0.5",
        "poisson:30",
        "poisson-gaussian:30,10",
        "poisson-gaussian:30,0-10",
    ],
)
def test_spec_round_trip(spec: str):
    model = parse_noise(spec)
    assert model.spec == spec
    assert parse_noise(model.spec) == model


def test_parse_noise_fields():
    assert parse_noise("gaussian:25") == NoiseModel("gaussian", sigma=(25.0, 25.0))
    assert parse_noise("poisson_gaussian:30,10") == NoiseModel("poisson_gaussian", sigma=(10, 10), peak=30)
    assert parse_noise("Poisson: 30").spec == "poisson:30"


def test_bicubic_shapes_and_dtype():
    image = np.random.default_rng(4).integers(0, 256, (3, 20, 30), dtype=np.uint8)
    out = bicubic_resize(image, (7, 11))
    assert out.shape == (3, 7, 11) and out.dtype == np.float32
    assert modcrop(image, 4).shape == (3, 20, 28)
    assert downscale(image, 3).shape == (3, 6, 10)
    assert upscale(out, 2).shape == (3, 14, 22)


def test_downscale_of_constant_stays_constant():
    out = downscale(np.full((2, 37, 50), 117, np.uint8), 4)
    assert out.shape == (2, 9, 12)
    np.testing.assert_allclose(out, 117.0, atol=1e-3)


def test_bicubic_values_not_clipped():
    step = np.zeros((1, 16, 16), np.float32)
    step[:, :, 8:] = 255.0
    up = upscale(step, 2)
    assert up.min() < 0 and up.max() > 255


def test_upscale_of_downscaled_ramp_is_close():
    yy, xx = np.mgrid[0:64, 0:64]
    ramp = (2.0 * xx + 1.5 * yy)[None].astype(np.float32)
    restored = upscale(downscale(ramp, 2), 2)
    assert restored.shape == ramp.shape
    # Away from the border (where the edge is replicated) a smooth ramp survives within a fraction of a level.
    assert np.abs(restored - ramp)[:, 4:-4, 4:-4].max() < 1.0


def test_ycbcr_known_values():
    white = rgb_to_ycbcr(np.full((3, 2, 2), 255.0))
    black = rgb_to_ycbcr(np.zeros((3, 2, 2)))
    np.testing.assert_allclose(white[:, 0, 0], [235.0, 128.0, 128.0], atol=1e-3)
    np.testing.assert_allclose(black[:, 0, 0], [16.0, 128.0, 128.0], atol=1e-3)
    red = rgb_to_ycbcr(np.array([255.0, 0.0, 0.0]).reshape(3, 1, 1))[:, 0, 0]
    np.testing.assert_allclose(red, [16 + 65.481, 128 - 37.797, 128 + 112.0], atol=1e-3)
    assert white.dtype == np.float32


def test_ycbcr_round_trip():
    rgb = np.random.default_rng(5).uniform(0, 255, (3, 8, 9))
    ycc = rgb_to_ycbcr(rgb)
    assert ycc.shape == rgb.shape
    np.testing.assert_allclose(ycbcr_to_rgb(ycc), rgb, atol=1e-3)


def test_ycbcr_needs_three_channels():
    with pytest.raises(ValueError, match="3-channel"):
        rgb_to_ycbcr(np.zeros((1, 4, 4)))
