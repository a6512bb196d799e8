"""Object-level metrics on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.instance_metrics import aggregated_jaccard_index, instance_scores, iou_matrix, match_counts


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


def _rows(length: int, spans: dict[int, tuple[int, int]]) -> np.ndarray:
    """A one-row label image with object ``id`` on columns ``start:stop`` for each ``id: (start, stop)``."""
    labels = np.zeros((1, length), dtype=np.int32)
    for value, (start, stop) in spans.items():
        labels[0, start:stop] = value
    return labels


@pytest.mark.parametrize("found, stray", [(1, 2), (2, 1)])
def test_aji_true_object_overlapping_no_prediction(found, stray):
    # G1 (4 px) is found exactly; G2 (2 px) overlaps no prediction; a stray prediction (3 px) overlaps
    # nothing. Kumar et al.: I = 4, U = 4 + 2 (G2 alone) + 3 (the unused stray) = 9, whatever the ids.
    true = _rows(12, {1: (0, 4), 2: (5, 7)})
    pred = _rows(12, {found: (0, 4), stray: (9, 12)})
    assert aggregated_jaccard_index(true, pred) == pytest.approx(4 / 9)


def test_aji_ties_are_broken_by_position_not_by_id():
    # G1 = [0, 6) has IoU 1/3 with both P1 = [0, 2) and P2 = [2, 12); G2 = [6, 12) pairs with P2 (0.6).
    # The prediction met first in raster order (P1, the lowest id had the labels come from
    # connected components) wins: I = 2 + 6, U = 6 + 10 -> 1/2 (with P2: 10 / 24).
    true = _rows(12, {1: (0, 6), 2: (6, 12)})
    for first, second in ((1, 2), (2, 1)):
        pred = _rows(12, {first: (0, 2), second: (2, 12)})
        assert aggregated_jaccard_index(true, pred) == pytest.approx(0.5)


def test_scores_do_not_depend_on_how_predictions_are_numbered():
    true = np.zeros((40, 40), dtype=np.int32)
    pred = np.zeros((40, 40), dtype=np.int32)
    for i, (y, x) in enumerate([(2, 2), (2, 20), (20, 2), (20, 20), (31, 2)], start=1):
        true[y : y + 8, x : x + 8] = i
    shifts = [(0, 1), (3, 0), (1, 4), (6, 6)]  # the fifth true object is missed
    for j, ((y, x), (dy, dx)) in enumerate(zip([(2, 2), (2, 20), (20, 2), (20, 20)], shifts), start=1):
        pred[y + dy : y + dy + 8, x + dx : x + dx + 8] = j
    pred[0:2, 34:40] = 5  # a false positive overlapping nothing
    pred[12:16, 12:18] = 6
    true[14:18, 12:18] = 7  # overlaps prediction 6 with IoU 1/3
    reference = instance_scores(true, pred).to_dict()
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = np.concatenate([[0], rng.permutation(np.arange(1, 7)) * rng.integers(1, 50)])
        relabelled = ids[pred]
        assert instance_scores(true, relabelled).to_dict() == pytest.approx(reference)


def test_matching_below_half_maximises_the_number_of_matches():
    # A = [0, 10), B = [10, 14); X = [2, 12), Y = [0, 2). IoU: A-X 2/3, A-Y 1/5, B-X 1/6, B-Y 0.
    # At t = 0.15 the largest summed IoU takes A-X alone (TP 1); StarDist's rule takes A-Y and B-X (TP 2).
    true = _rows(14, {1: (0, 10), 2: (10, 14)})
    pred = _rows(14, {1: (2, 12), 2: (0, 2)})
    iou, _ = iou_matrix(true, pred)
    np.testing.assert_allclose(iou, [[2 / 3, 1 / 5], [1 / 6, 0.0]])
    counts = match_counts(iou, 0.15)
    assert (counts.tp, counts.fp, counts.fn) == (2, 0, 0)
    assert counts.mean_matched_iou == pytest.approx((1 / 5 + 1 / 6) / 2)
    assert match_counts(iou, 0.5).tp == 1 and match_counts(iou, 0.7).tp == 0
