"""Metrics: hand-computed cases, documented empty cases, and agreement with MONAI / scikit-image."""

import math

import numpy as np
import pytest

from unetkit.metrics import (
    adapted_rand_error,
    best_pixel_error,
    best_rand_error,
    confusion_matrix,
    dice_per_class,
    hausdorff95,
    iou_per_class,
    pixel_counts_by_threshold,
    precision_per_class,
    rand_error,
    rand_errors_by_threshold,
    recall_per_class,
    segmentation_metrics,
    summarize,
)


def test_confusion_and_ratios_hand_case():
    pred = np.array([1, 1, 0, 0])
    truth = np.array([1, 0, 1, 0])
    cm = confusion_matrix(pred, truth, 2)
    assert cm.tolist() == [[1, 1], [1, 1]]
    assert dice_per_class(cm).tolist() == pytest.approx([0.5, 0.5])
    assert iou_per_class(cm).tolist() == pytest.approx([1 / 3, 1 / 3])
    pred = np.array([1, 1, 0, 1])
    cm = confusion_matrix(pred, truth, 2)
    # Class 1: TP 1, FP 2, FN 1.
    assert precision_per_class(cm)[1] == pytest.approx(1 / 3)
    assert recall_per_class(cm)[1] == pytest.approx(1 / 2)
    assert dice_per_class(cm)[1] == pytest.approx(2 / 5)


def test_ignore_index_and_out_of_range():
    pred = np.array([0, 1, 1])
    truth = np.array([0, 1, 5])
    assert confusion_matrix(pred, truth, 2, ignore_index=5).tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion_matrix(pred, truth, 2)


def test_empty_cases_are_documented_values():
    empty = np.zeros((4, 4), int)
    some = empty.copy()
    some[1, 1] = 1
    both_empty = segmentation_metrics(empty, empty, 2)
    assert both_empty["dice"] == 1.0 and both_empty["iou"] == 1.0
    assert both_empty["precision"] == 1.0 and both_empty["recall"] == 1.0
    assert both_empty["hd95"] == 0.0 and both_empty["rand_error"] == 0.0
    missed = segmentation_metrics(empty, some, 2)  # nothing predicted, one true pixel
    assert missed["dice"] == 0.0 and missed["recall"] == 0.0 and missed["precision"] == 0.0
    assert math.isnan(missed["hd95"])
    false_alarm = segmentation_metrics(some, empty, 2)
    assert false_alarm["dice"] == 0.0 and false_alarm["recall"] == 0.0 and false_alarm["precision"] == 0.0


def test_multiclass_means_skip_classes_absent_from_both():
    pred = np.array([[0, 0, 1, 1]])
    truth = np.array([[0, 0, 1, 0]])
    m = segmentation_metrics(pred, truth, 4, class_names=["a", "b", "c", "d"], boundary_metrics=False)
    # Class a: TP 2, FN 1 -> 4/5; class b: TP 1, FP 1 -> 2/3; c and d absent from both.
    assert m["dice_a"] == pytest.approx(0.8) and m["dice_b"] == pytest.approx(2 / 3)
    assert m["dice_c"] == 1.0
    assert m["mean_dice"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["pixel_error"] == pytest.approx(0.25)


def test_hausdorff95_single_points_and_spacing():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0, 0] = True
    b[3, 4] = True
    assert hausdorff95(a, b) == pytest.approx(5.0)
    assert hausdorff95(a, b, spacing=(2.0, 1.0)) == pytest.approx(math.hypot(6, 4))
    assert hausdorff95(a, a) == 0.0


def test_hausdorff95_matches_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    from scipy import ndimage

    for _ in range(3):
        a = ndimage.gaussian_filter(rng.random((64, 64)), 4) > 0.5
        b = ndimage.gaussian_filter(rng.random((64, 64)), 4) > 0.5
        ours = hausdorff95(a, b)
        y_pred = torch.from_numpy(np.stack([~a, a])[None].astype(np.float32))
        y = torch.from_numpy(np.stack([~b, b])[None].astype(np.float32))
        theirs = monai_metrics.compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95)
        assert ours == pytest.approx(float(theirs[0, 0]), rel=1e-5)


def test_rand_error_hand_cases():
    # Truth: two cells (2 px each) separated by one membrane pixel; prediction merges them.
    truth = np.array([[1, 1, 0, 1, 1]])
    merged = np.ones((1, 5), int)
    # sum a_i^2 = 8, sum b_j^2 = 16, sum p_ij^2 = 8 -> P = 1/2, R = 1, error = 1/3.
    assert rand_error(merged, truth) == pytest.approx(1 / 3)
    # Truth: one 5-px cell; prediction splits it with one membrane pixel (a singleton).
    # sum a^2 = 25, sum b^2 = 8 + 1/5, sum p^2 = 8 + 1/5 -> P = 1, R = 8.2/25.
    recall = 8.2 / 25
    split = rand_error(np.array([[1, 1, 0, 1, 1]]), np.ones((1, 5), int))
    assert split == pytest.approx(1 - 2 * recall / (1 + recall))
    assert rand_error(truth, truth) == 0.0


def test_rand_error_4_connectivity_keeps_diagonal_cells_apart():
    truth = np.array([[1, 0], [0, 1]])
    assert rand_error(truth, truth) == 0.0
    # With 8-connectivity the two diagonal pixels would be one cell.
    assert rand_error(truth, truth, connectivity=2) == 0.0
    assert rand_error(np.ones((2, 2), int), truth) > 0


def test_adapted_rand_agrees_with_scikit_image_without_unassigned_pixels():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    from scipy import ndimage

    truth = ndimage.label(ndimage.gaussian_filter(rng.random((128, 128)), 3) > 0.5)[0]
    seg = ndimage.label(ndimage.gaussian_filter(rng.random((128, 128)), 3) > 0.45)[0] + 1
    ours = adapted_rand_error(seg, truth)
    theirs = skm.adapted_rand_error(truth, seg, ignore_labels=(0,))[0]
    # skimage counts pairs without self-pairs (n^2 - n); on thousands of pixels the two agree closely.
    assert 0.05 < ours < 0.95
    assert ours == pytest.approx(theirs, abs=2e-3)


def test_summary_means_and_global_iou():
    a = segmentation_metrics(np.array([[0, 1]]), np.array([[0, 1]]), 2)
    b = segmentation_metrics(np.array([[0, 0]]), np.array([[0, 1]]), 2)
    s = summarize([a, b], 2, ["bg", "fg"])
    assert s["dice"] == pytest.approx(0.5)
    # Summed confusion: fg TP 1, FN 1 -> IoU 1/2; bg TP 2, FP 1 -> IoU 2/3.
    assert s["global_iou_per_class"] == pytest.approx({"bg": 2 / 3, "fg": 0.5})
    assert s["num_images"] == 2


def test_best_rand_error_picks_one_threshold_for_the_whole_set():
    truth = np.array([[1, 1, 0, 1, 1]])
    # Membrane probability dips to 0.55 cell-probability: only thresholds >= 0.6 keep the two cells apart.
    prob = np.array([[0.95, 0.95, 0.55, 0.95, 0.95]])
    sweep = rand_errors_by_threshold(prob, truth)
    assert sweep[5] == pytest.approx(1 / 3) and sweep[6] == 0.0 and sweep[9] == 0.0
    assert sweep[0] > 0.0  # threshold 0: the whole row is one cell
    other = np.where(np.arange(10) == 6, 0.2, 0.1)  # a second image that does worse at 0.6
    error, threshold = best_rand_error(np.stack([sweep, other]))
    assert threshold == 0.7 and error == pytest.approx(0.05)


def test_isbi_pixel_error_is_one_minus_the_best_pooled_f_score():
    prob = np.array([0.2, 0.6, 0.9, 0.4])
    truth = np.array([0, 1, 1, 1])
    counts = pixel_counts_by_threshold(prob, truth, thresholds=(0.3, 0.5))
    assert counts.tolist() == [[3, 0, 0], [2, 0, 1]]  # TP, FP, FN at 0.3 and at 0.5
    assert best_pixel_error(counts[None], thresholds=(0.3, 0.5)) == (0.0, 0.3)
    assert best_pixel_error(counts[None, 1:], thresholds=(0.5,))[0] == pytest.approx(1 - 4 / 5)
    # Pooled over images (as the challenge sums over the stack), not a mean of per-image scores.
    a, b = np.array([[[1, 0, 1]]]), np.array([[[3, 1, 0]]])
    assert best_pixel_error(np.concatenate([a, b]), thresholds=(0.5,))[0] == pytest.approx(1 - 8 / 10)
    # Nothing to find and nothing found: no error.
    assert best_pixel_error(np.zeros((2, 1, 3)), thresholds=(0.5,)) == (0.0, 0.5)


def test_dataset_means_leave_out_classes_absent_from_the_whole_dataset():
    names = ["a", "b", "c", "d"]
    one = segmentation_metrics(np.array([[0, 0, 1, 1]]), np.array([[0, 0, 1, 0]]), 4, class_names=names)
    two = segmentation_metrics(np.array([[0, 1]]), np.array([[0, 1]]), 4, class_names=names)
    s = summarize([one, two], 4, names)
    # Summed: a TP 3, FN 1 -> IoU 3/4, Dice 6/7; b TP 2, FP 1 -> IoU 2/3, Dice 4/5; c, d never seen.
    assert s["global_iou"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert s["global_dice"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    assert s["absent_classes"] == ["c", "d"]


def test_hd95_of_an_image_with_a_missed_class_is_undefined_and_counted():
    truth = np.zeros((8, 8), int)
    truth[1:4, 1:4] = 1
    truth[5:7, 5:7] = 2
    found_one = np.where(truth == 2, 0, truth)  # class 2 missed, class 1 perfect
    missed = segmentation_metrics(found_one, truth, 3)
    assert math.isnan(missed["hd95"])
    perfect = segmentation_metrics(truth, truth, 3)
    assert perfect["hd95"] == 0.0
    s = summarize([missed, perfect], 3)
    assert s["hd95"] == 0.0 and s["hd95_misses"] == 1
