"""Noise2Void blind-spot masking: stratified masks and the N2V2 uniform / median replacements."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.data.blindspot import apply_blind_spot, blind_spot_mask


@pytest.mark.parametrize(("shape", "fraction"), [((64, 64), 0.02), ((96, 80), 0.005), ((16, 32, 32), 0.01)])
def test_mask_fraction_respected(shape: tuple[int, ...], fraction: float):
    rng = np.random.default_rng(0)
    for _ in range(10):
        mask = blind_spot_mask(shape, fraction, rng)
        assert mask.shape == shape and mask.dtype == bool
        assert abs(mask.mean() / fraction - 1.0) < 0.2


def test_mask_is_stratified():
    mask = blind_spot_mask((64, 64), 1 / 64, np.random.default_rng(1))
    # Boxes of 8x8: masked pixels are spread out, never piled up in one part of the patch.
    counts = [mask[i : i + 16, j : j + 16].sum() for i in range(0, 64, 16) for j in range(0, 64, 16)]
    assert 1 <= min(counts) and max(counts) <= 9


def test_mask_has_at_least_one_pixel():
    assert blind_spot_mask((4, 4), 0.001, np.random.default_rng(2)).sum() >= 1


def test_mask_deterministic_with_seed():
    a = blind_spot_mask((32, 32), 0.05, np.random.default_rng(3))
    assert np.array_equal(a, blind_spot_mask((32, 32), 0.05, np.random.default_rng(3)))
    assert not np.array_equal(a, blind_spot_mask((32, 32), 0.05, np.random.default_rng(4)))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction_raises(fraction: float):
    with pytest.raises(ValueError, match="fraction"):
        blind_spot_mask((16, 16), fraction, np.random.default_rng(0))


@pytest.mark.parametrize("shape", [(2, 24, 20), (1, 10, 12, 14)])
def test_uniform_replaces_with_other_neighbour(shape: tuple[int, ...]):
    radius = 2
    spatial = shape[1:]
    patch = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    mask = blind_spot_mask(spatial, 0.1, np.random.default_rng(5))
    mask[(0,) * len(spatial)] = True  # a corner, where the window is cut to the patch
    out = apply_blind_spot(patch, mask, np.random.default_rng(6), radius=radius)
    assert out.dtype == np.float32 and out.shape == patch.shape
    assert np.array_equal(out[:, ~mask], patch[:, ~mask])
    centres = np.argwhere(mask)
    # Unique values: the source pixel is found back from the value of channel 0.
    sources = np.argwhere(np.isin(patch[0], out[0][mask]))
    lookup = {float(patch[0][tuple(s)]): s for s in sources}
    for centre in centres:
        source = lookup[float(out[(0, *centre)])]
        assert not np.array_equal(source, centre)
        assert np.abs(source - centre).max() <= radius
        assert np.array_equal(out[(slice(None), *centre)], patch[(slice(None), *source)])  # all channels


def test_uniform_is_deterministic_and_does_not_modify_input():
    patch = np.random.default_rng(7).normal(size=(1, 16, 16)).astype(np.float32)
    before = patch.copy()
    mask = blind_spot_mask((16, 16), 0.1, np.random.default_rng(8))
    a = apply_blind_spot(patch, mask, np.random.default_rng(9))
    assert np.array_equal(a, apply_blind_spot(patch, mask, np.random.default_rng(9)))
    assert np.array_equal(patch, before)


def test_uniform_never_picks_centre_with_radius_one_at_corner():
    patch = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    mask = np.array([[True, False], [False, False]])
    rng = np.random.default_rng(10)
    assert all(apply_blind_spot(patch, mask, rng, radius=1)[0, 0, 0] in (1.0, 2.0, 3.0) for _ in range(50))


def test_median_hand_case():
    patch = np.array([[[9, 1, 7], [3, 100, 5], [2, 8, 4]]], dtype=np.float32)
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = mask[0, 0] = True
    out = apply_blind_spot(patch, mask, np.random.default_rng(0), radius=1, mode="median")
    assert out[0, 1, 1] == np.median([9, 1, 7, 3, 5, 2, 8, 4])  # 4.5, the centre 100 left out
    assert out[0, 0, 0] == np.median([1, 3, 100])  # window cut at the corner
    assert out[0, 0, 1] == 1 and out[0, 2, 2] == 4


def test_median_per_channel_3d():
    patch = np.random.default_rng(11).normal(size=(2, 5, 6, 7)).astype(np.float32)
    mask = np.zeros((5, 6, 7), bool)
    mask[2, 3, 3] = True
    out = apply_blind_spot(patch, mask, np.random.default_rng(0), radius=1, mode="median")
    window = patch[:, 1:4, 2:5, 2:5].reshape(2, -1)
    expected = np.median(np.delete(window, 13, axis=1), axis=1)
    np.testing.assert_allclose(out[:, 2, 3, 3], expected, rtol=1e-6)


def test_bad_arguments_raise():
    patch = np.zeros((1, 8, 8), np.float32)
    mask = np.ones((8, 8), bool)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="mode"):
        apply_blind_spot(patch, mask, rng, mode="zero")
    with pytest.raises(ValueError, match="radius"):
        apply_blind_spot(patch, mask, rng, radius=0)
    with pytest.raises(ValueError, match="mask"):
        apply_blind_spot(patch, np.ones((8, 9), bool), rng)
