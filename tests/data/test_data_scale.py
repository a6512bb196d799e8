"""Object scale: diameters, resize factors, resizing, training patches and two-pass prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from data_helpers import make_dataset, save_png
from scipy import ndimage
from skimage.draw import disk

from unetkit.data import ClassInfo, NormalizeConfig, PatchDataset, find_samples
from unetkit.data.scale import (
    FACTOR_LIMITS,
    equivalent_diameters,
    median_object_diameter,
    predict_at_object_scale,
    predicted_object_diameter,
    resize_spatial,
    scale_factor,
)

BINARY = ClassInfo(names=["background", "foreground"], encoding="binary255")


def disks(shape: tuple[int, int], radius: float, centres: list[tuple[int, int]]) -> np.ndarray:
    """Instance ids ``shape``: disk ``i + 1`` of ``radius`` at ``centres[i]``."""
    out = np.zeros(shape, np.int32)
    for i, centre in enumerate(centres):
        out[disk(centre, radius, shape=shape)] = i + 1
    return out


def test_equivalent_diameter_of_disks_and_balls():
    labels = disks((64, 64), 8, [(16, 16), (44, 44)])
    np.testing.assert_allclose(equivalent_diameters(labels), [16, 16], rtol=0.05)
    assert median_object_diameter(labels) == pytest.approx(16, rel=0.05)
    assert math.isnan(median_object_diameter(np.zeros((8, 8), np.int32)))
    zz, yy, xx = np.mgrid[:21, :21, :21]
    ball = ((zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 36).astype(np.int32)
    assert equivalent_diameters(ball)[0] == pytest.approx(12, rel=0.05)
    assert equivalent_diameters(labels, min_size=10_000).size == 0


def test_scale_factor_clips_and_ignores_small_changes():
    assert scale_factor(10, 20) == 2.0
    assert scale_factor(19.5, 20) == 1.0  # within the tolerance: left alone
    assert scale_factor(1, 100) == FACTOR_LIMITS[1] and scale_factor(1000, 10) == FACTOR_LIMITS[0]
    assert scale_factor(math.nan, 20) == 1.0 and scale_factor(0.0, 20) == 1.0


def test_resize_keeps_channels_ids_and_exact_shape():
    image = np.random.default_rng(0).random((3, 30, 41)).astype(np.float32)
    out = resize_spatial(image, (61, 83), labels=False)
    assert out.shape == (3, 61, 83) and out.dtype == np.float32
    assert image.min() - 1e-6 <= out.min() and out.max() <= image.max() + 1e-6
    labels = disks((30, 41), 6, [(10, 10), (18, 28)])
    small = resize_spatial(labels, (13, 17), labels=True)
    assert small.shape == (13, 17) and set(np.unique(small)) == {0, 1, 2}
    assert resize_spatial(labels, (30, 41), labels=True) is labels


def threshold_predict(calls: list):
    """A deterministic 'network': foreground where the (single-channel) image exceeds 0.5."""

    def predict(image: np.ndarray) -> np.ndarray:
        calls.append(image.shape)
        foreground = (image[0] > 0.5).astype(np.float32)
        return np.stack([1.0 - foreground, foreground])

    return predict


def test_two_pass_prediction_resizes_to_the_target_and_back():
    truth = disks((96, 96), 5, [(20, 20), (20, 60), (60, 30), (70, 75)])
    image = (truth > 0).astype(np.float32)[None]
    assert predicted_object_diameter(threshold_predict([])(image)) == pytest.approx(10, rel=0.1)

    calls: list = []
    probabilities = predict_at_object_scale(threshold_predict(calls), image, target=20)
    # measured at about 10 px, predicted again at about twice the size
    assert calls[0] == (1, 96, 96) and len(calls) == 2 and 180 <= calls[1][1] == calls[1][2] <= 210
    assert probabilities.shape == (2, 96, 96)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    predicted = probabilities.argmax(axis=0) == 1
    overlap = (predicted & (truth > 0)).sum() / (predicted | (truth > 0)).sum()
    assert overlap > 0.9

    calls.clear()
    predict_at_object_scale(threshold_predict(calls), image, target=10)
    assert calls == [(1, 96, 96)]  # already at the target size: one pass


def test_patch_dataset_resizes_each_image_to_the_object_diameter(tmp_path):
    small = disks((64, 64), 4, [(16, 16), (16, 48), (48, 30)])  # 8 px objects
    large = disks((64, 64), 12, [(20, 20), (44, 44)])  # 24 px objects
    root = make_dataset(tmp_path / "ds", [((m > 0) * 255).astype(np.uint8) for m in (small, large)])
    for i, instances in enumerate((small, large)):
        save_png(root / "instances" / f"im_{i}.png", instances.astype(np.uint16))
    samples = find_samples(root)
    dataset = PatchDataset(samples, BINARY, patch_size=32, normalize=NormalizeConfig(), target="three_class",
                           object_diameter=16)
    upscaled, downscaled = dataset._load(0), dataset._load(1)
    assert upscaled.labels.shape[0] > 120 and upscaled.image.shape == (1, *upscaled.labels.shape)
    assert downscaled.labels.shape[0] < 48
    for cached in (upscaled, downscaled):
        # the 3-class target is drawn after resizing: objects of about 16 px, with a 2 px border
        objects = ndimage.label(cached.labels > 0)[0]
        assert median_object_diameter(objects) == pytest.approx(16, rel=0.15)
        assert (cached.labels == 1).any() and (cached.labels == 2).any()
    item = dataset[0]
    assert item["image"].shape == (1, 32, 32) and item["mask"].shape == (32, 32)
    with pytest.raises(ValueError, match="object_diameter"):
        PatchDataset(samples, BINARY, patch_size=32, normalize=NormalizeConfig(), object_diameter=0)

