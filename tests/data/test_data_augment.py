"""Augmentation keeps image, mask and weight aligned; masks are never interpolated; seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.data.transforms import AugmentConfig, Augmenter, elastic_field, reflect_indices

RNG = np.random.default_rng(5)


def spatial_only(**changes) -> AugmentConfig:
    """Every spatial augmentation on, intensity off, nearest-neighbour image sampling."""
    cfg = AugmentConfig.all_on()
    for name in ("brightness_p", "contrast_p", "gamma_p", "noise_p", "blur_p"):
        setattr(cfg, name, 0.0)
    cfg.image_order = 0
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


@pytest.mark.parametrize("dims", (2, 3))
def test_mask_stays_the_threshold_of_the_image(dims):
    shape = (40, 48) if dims == 2 else (12, 20, 24)
    image = RNG.random((1,) + shape).astype(np.float32)
    mask = (image[0] > 0.5).astype(np.int64)
    patch = (32, 32) if dims == 2 else (8, 16, 16)
    aug = Augmenter(spatial_only(inplane_only_3d=False), dims)
    rng = np.random.default_rng(0)
    for _ in range(15):
        out, [lab], _ = aug(rng, image, [mask], origin=[-3] * dims, patch_shape=patch)
        assert out.shape == (1,) + patch and lab.shape == patch
        np.testing.assert_array_equal(out[0] > 0.5, lab == 1)


def test_linear_image_and_nearest_mask_stay_aligned_on_smooth_objects():
    yy, xx = np.mgrid[:64, :64]
    image = np.exp(-((yy - 30.0) ** 2 + (xx - 34.0) ** 2) / (2 * 10.0**2)).astype(np.float32)[None]
    mask = (image[0] > 0.5).astype(np.int64)
    aug = Augmenter(spatial_only(image_order=1), 2)
    rng = np.random.default_rng(1)
    for _ in range(10):
        out, [lab], _ = aug(rng, image, [mask], origin=(0, 0), patch_shape=(64, 64))
        disagree = (out[0] > 0.5) != (lab == 1)
        assert disagree.mean() < 0.01  # only at the boundary, where linear and nearest sampling differ


def test_masks_never_get_interpolated_classes_and_weights_follow():
    image = RNG.random((2, 50, 50)).astype(np.float32)
    labels = RNG.choice(np.array([0, 3, 7, 255]), size=(50, 50))
    weight = labels.astype(np.float32)
    aug = Augmenter(AugmentConfig.all_on(), 2)
    rng = np.random.default_rng(2)
    for _ in range(10):
        out, [lab], [w] = aug(rng, image, [labels], [weight], origin=(5, 5), patch_shape=(40, 40),
                              output_shape=(20, 20))
        assert out.shape == (2, 40, 40) and out.dtype == np.float32
        assert lab.shape == (20, 20) and set(np.unique(lab)) <= {0, 3, 7, 255}
        assert w.shape == (20, 20) and w.dtype == np.float32


def test_output_shape_is_the_centre_of_the_patch():
    image = np.arange(30 * 30, dtype=np.float32).reshape(1, 30, 30)
    labels = image[0].astype(np.int64)
    aug = Augmenter(AugmentConfig.none(), 2)
    out, [lab], _ = aug(np.random.default_rng(0), image, [labels], origin=(2, 3), patch_shape=(20, 20),
                        output_shape=(8, 8))
    np.testing.assert_array_equal(out[0], image[0, 2:22, 3:23])
    np.testing.assert_array_equal(lab, labels[8:16, 9:17])


def test_small_image_is_mirror_padded():
    image = np.arange(5, dtype=np.float32).reshape(1, 1, 5).repeat(3, axis=1)
    aug = Augmenter(AugmentConfig.none(), 2)
    out, _, _ = aug(np.random.default_rng(0), image, origin=(0, -3), patch_shape=(3, 11))
    np.testing.assert_array_equal(out[0, 0], [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1])
    np.testing.assert_array_equal(reflect_indices(np.arange(-3, 8), 1), np.zeros(11))


def test_same_seed_same_patch_and_different_seed_differs():
    image = RNG.random((1, 60, 60)).astype(np.float32)
    aug = Augmenter(AugmentConfig.all_on(), 2)
    a = aug(np.random.default_rng(7), image, origin=(0, 0), patch_shape=(48, 48))[0]
    b = aug(np.random.default_rng(7), image, origin=(0, 0), patch_shape=(48, 48))[0]
    c = aug(np.random.default_rng(8), image, origin=(0, 0), patch_shape=(48, 48))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_elastic_field_is_smooth_with_the_paper_scale():
    rng = np.random.default_rng(0)
    fields = np.stack([elastic_field(rng, (64, 64), 3, 10.0, [0, 1]) for _ in range(200)])
    corners = fields[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # control points are at the corners
    assert 8.5 < corners.std() < 11.5
    assert np.abs(np.diff(fields, axis=-1)).max() < 3.0  # no jumps between neighbouring pixels
    inplane = elastic_field(rng, (8, 16, 16), 3, 10.0, [1, 2])
    assert np.all(inplane[0] == 0) and inplane[1].std() > 0


def test_intensity_augmentations_change_only_values():
    cfg = AugmentConfig.none()
    cfg.brightness_p = cfg.contrast_p = cfg.gamma_p = cfg.noise_p = cfg.blur_p = 1.0
    image = RNG.random((3, 16, 16)).astype(np.float32)
    out = Augmenter(cfg, 2).apply_intensity(np.random.default_rng(0), image)
    assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out, image)


def test_config_round_trip_and_validation():
    cfg = AugmentConfig(rotate_range=30.0, scale_range=(0.9, 1.1))
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(flip_p=1.5)
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentConfig.from_dict({"flipp": 0.5})
