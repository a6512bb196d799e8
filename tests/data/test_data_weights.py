"""The paper's border weight map on hand-made cases."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from unetkit.data.weights import REACH_SIGMAS, border_weight_map, class_weight_map


def two_squares(gap: int = 2) -> np.ndarray:
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 10:28] = 1
    labels[10:30, 28 + gap : 46 + gap] = 2
    return labels


def test_touching_squares_weigh_most_in_the_gap():
    labels = two_squares(gap=2)
    weights = border_weight_map(labels, w0=10, sigma=5)
    gap = weights[10:30, 28:30]
    outside_gap = weights.copy()
    outside_gap[10:30, 28:30] = 0
    assert gap.min() > outside_gap.max()
    assert np.isclose(weights.max(), weights[20, 28]) or np.isclose(weights.max(), weights[20, 29])
    assert np.all(np.isfinite(weights)) and weights.min() > 0


def test_single_object_has_no_border_term():
    labels = np.zeros((30, 30), np.int32)
    labels[5:15, 5:15] = 1
    np.testing.assert_allclose(border_weight_map(labels), class_weight_map(labels > 0))


def test_balanced_class_weights_have_mean_one():
    labels = np.zeros((10, 10), np.int64)
    labels[:2] = 1
    w = class_weight_map(labels)
    assert np.isclose(w.mean(), 1.0) and np.isclose(w[0, 0] / w[9, 9], 4.0)
    np.testing.assert_array_equal(class_weight_map(labels, None), np.ones((10, 10)))
    ignored = labels.copy()
    ignored[5, 5] = 255
    assert class_weight_map(ignored, ignore_index=255)[5, 5] == 0


def brute_force(labels: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    dists = np.stack([ndimage.distance_transform_edt(labels != i) for i in range(1, labels.max() + 1)])
    dists.sort(axis=0)
    border = w0 * np.exp(-((dists[0] + dists[1]) ** 2) / (2 * sigma**2))
    return class_weight_map(labels > 0) + np.where(labels == 0, border, 0)


def test_matches_brute_force_distances_within_the_stated_bound():
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.int32)
    for k in range(1, 9):
        y, x = rng.integers(0, 56, size=2)
        labels[y : y + 8, x : x + 8] = k
    fast = border_weight_map(labels, w0=10, sigma=5, class_weights="balanced")
    exact = brute_force(labels, 10, 5)
    assert np.abs(fast - exact).max() <= 10 * np.exp(-(REACH_SIGMAS**2) / 2) + 1e-5


def test_three_d_and_anisotropic_spacing():
    labels = np.zeros((6, 20, 20), np.int32)
    labels[:, 2:9, 2:9] = 1
    labels[:, 2:9, 11:18] = 2
    weights = border_weight_map(labels, sigma=3)
    assert weights.shape == labels.shape and weights[3, 5, 9:11].min() > weights[3, 15, 15]
    stretched = border_weight_map(labels, sigma=3, spacing=(4.0, 1.0, 1.0))
    assert np.all(np.isfinite(stretched))
