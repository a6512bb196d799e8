"""Object-level metrics on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.instance_metrics import aggregated_jaccard_index, instance_scores, iou_matrix


def square(shape=(12, 12), box=(2, 2, 6, 6), value=1, into=None):
    labels = np.zeros(shape, dtype=np.int32) if into is None else into
    y0, x0, y1, x1 = box
    labels[y0:y1, x0:x1] = value
    return labels


def test_perfect_prediction_scores_one_even_with_other_ids():
    true = square(value=3, into=square(box=(7, 7, 10, 10), value=9))
    pred = np.where(true == 3, 1, np.where(true == 9, 2, 0))
    scores = instance_scores(true, pred)
    for name in ("precision_50", "recall_50", "f1_50", "ap_50", "dsb_score", "aji", "panoptic_quality"):
        assert getattr(scores, name) == pytest.approx(1.0), name
    assert scores.n_true == scores.n_pred == 2


def test_empty_cases():
    empty = np.zeros((8, 8), dtype=np.int32)
    both = instance_scores(empty, empty)
    assert both.ap_50 == both.dsb_score == both.aji == both.f1_50 == 1.0
    only_truth = instance_scores(square((8, 8)), empty)
    assert only_truth.ap_50 == only_truth.recall_50 == only_truth.aji == only_truth.dsb_score == 0.0
    only_pred = instance_scores(empty, square((8, 8)))
    assert only_pred.ap_50 == only_pred.precision_50 == only_pred.aji == 0.0


def test_one_object_split_in_two():
    true = square(box=(2, 2, 6, 6))  # 16 px
    pred = square(box=(2, 2, 6, 4), value=1, into=square(box=(2, 4, 6, 6), value=2))  # two halves of 8 px
    iou, _ = iou_matrix(true, pred)
    np.testing.assert_allclose(iou, [[0.5, 0.5]])
    s = instance_scores(true, pred)
    assert s.ap_50 == pytest.approx(1 / 2)  # TP 1, FP 1, FN 0
    assert s.precision_50 == pytest.approx(0.5) and s.recall_50 == pytest.approx(1.0)
    assert s.f1_50 == pytest.approx(2 / 3)
    assert s.dsb_score == pytest.approx(0.05)  # only the 0.5 threshold scores
    assert s.aji == pytest.approx(8 / (16 + 8))
    assert s.panoptic_quality == 0.0  # PQ needs IoU > 0.5


def test_two_objects_merged_into_one():
    true = square(box=(2, 2, 6, 4), value=1, into=square(box=(2, 4, 6, 6), value=2))
    pred = square(box=(2, 2, 6, 6))
    s = instance_scores(true, pred)
    assert s.ap_50 == pytest.approx(1 / 2)  # TP 1, FP 0, FN 1
    assert s.precision_50 == pytest.approx(1.0) and s.recall_50 == pytest.approx(0.5)
    assert s.aji == pytest.approx((8 + 8) / (16 + 16))


def test_shifted_object_iou_two_thirds():
    true = square((20, 20), box=(5, 5, 15, 15))
    pred = square((20, 20), box=(5, 7, 15, 17))  # intersection 80, union 120
    s = instance_scores(true, pred)
    assert s.ap_50 == 1.0
    assert s.dsb_score == pytest.approx(0.4)  # thresholds 0.5, 0.55, 0.6, 0.65 of ten
    assert s.panoptic_quality == pytest.approx(80 / 120)
    assert aggregated_jaccard_index(true, pred) == pytest.approx(80 / 120)


def test_3d_and_shape_mismatch():
    true = np.zeros((4, 6, 6), dtype=np.int32)
    true[1:3, 1:4, 1:4] = 5
    assert instance_scores(true, (true > 0).astype(np.int32)).dsb_score == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        instance_scores(true, true[0])
