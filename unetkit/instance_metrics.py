"""Object-level scores: predicted objects matched to true objects by IoU.

Definitions (label images: 0 = background, each object its own id; 2D or 3D):

* matching at threshold ``t`` (StarDist's rule): a one-to-one assignment of predicted to true
  objects among pairs with IoU >= ``t`` that has the most pairs, and of those the largest summed
  IoU (Hungarian; above ``t = 0.5`` every pair over the threshold is unique anyway). Matched pairs
  are true positives (TP), unmatched predictions false positives (FP), unmatched true objects
  false negatives (FN).
* precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN).
* average precision as in the StarDist paper and the 2018 Data Science Bowl:
  AP(t) = TP / (TP + FP + FN); the DSB score is the mean of AP(t) over t = 0.5, 0.55, ..., 0.95.
* aggregated Jaccard index (Kumar et al. 2017): every true object G is paired with the
  overlapping predicted object S of highest IoU (of equal ones, the first met in raster order, so
  the score does not depend on the predicted ids) and adds |G ∩ S| to the intersection and
  |G ∪ S| to the union; a true object that overlaps no prediction adds |G| to the union only;
  every prediction paired with no true object adds its area to the union. AJI = intersection / union.
* panoptic quality (Kirillov et al. 2019) at IoU > 0.5: sum of matched IoUs / (TP + FP/2 + FN/2).

Empty cases: when neither image has an object every score is 1.0 (nothing to find, nothing
found); when only one of them has objects, every score is 0.0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

DSB_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _dense_ids(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel to 0..N (0 = background) so ids can index arrays."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        return inverse.reshape(labels.shape) + 1, len(ids)
    return inverse.reshape(labels.shape), len(ids) - 1


def _joint_histogram(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``(n_true + 1, n_pred + 1)`` pixel counts of every (true id, predicted id) pair, row and
    column 0 the background, objects in the order of their ids."""
    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: truth {true.shape}, prediction {pred.shape}")
    t, n_true = _dense_ids(true)
    p, n_pred = _dense_ids(pred)
    joint = np.bincount(t.ravel() * (n_pred + 1) + p.ravel(), minlength=(n_true + 1) * (n_pred + 1))
    return joint.reshape(n_true + 1, n_pred + 1)


def _iou(joint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection ``(n_true, n_pred)`` of the objects of a :func:`_joint_histogram`."""
    intersection = joint[1:, 1:].astype(np.float64)
    area_true = joint[1:, :].sum(axis=1, keepdims=True)
    area_pred = joint[:, 1:].sum(axis=0, keepdims=True)
    union = area_true + area_pred - intersection
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    return iou, intersection


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of every true object (rows) with every predicted object (columns), and the
    intersection counts, both ``(n_true, n_pred)``. Computed from one joint histogram."""
    return _iou(_joint_histogram(np.asarray(true), np.asarray(pred)))


def _raster_order(labels: np.ndarray) -> np.ndarray:
    """Object indices (the columns of :func:`iou_matrix`) sorted by where each object's first
    pixel lies in raster order."""
    ids, first = np.unique(labels.ravel(), return_index=True)
    return np.argsort(first[ids != 0], kind="stable")


@dataclass
class MatchCounts:
    threshold: float
    tp: int
    fp: int
    fn: int
    mean_matched_iou: float

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def average_precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def panoptic_quality(self) -> float:
        return _ratio(self.mean_matched_iou * self.tp, self.tp + 0.5 * self.fp + 0.5 * self.fn)


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, with 0/0 = 1.0 (no objects to find and none found)."""
    return 1.0 if denominator == 0 else float(numerator) / float(denominator)


def match_counts(iou: np.ndarray, threshold: float) -> MatchCounts:
    """TP/FP/FN of the one-to-one matching among pairs with IoU >= ``threshold`` that has the most
    pairs and, of those, the largest summed IoU (StarDist's ``matching``)."""
    n_true, n_pred = iou.shape
    if n_true == 0 or n_pred == 0:
        return MatchCounts(threshold, 0, n_pred, n_true, 0.0)
    candidate = iou >= threshold
    if threshold > 0.5:  # pairs above 0.5 IoU are unique: no assignment problem
        rows, cols = np.nonzero(candidate)
    else:
        # Each pair is worth 1, plus its IoU scaled so that all of them together stay below one pair.
        scaled = np.where(candidate, iou, 0.0) / (2 * min(n_true, n_pred))
        rows, cols = linear_sum_assignment(candidate + scaled, maximize=True)
        keep = candidate[rows, cols]
        rows, cols = rows[keep], cols[keep]
    tp = len(rows)
    mean_iou = float(iou[rows, cols].mean()) if tp else 0.0
    return MatchCounts(threshold, tp, n_pred - tp, n_true - tp, mean_iou)


def aggregated_jaccard_index(true: np.ndarray, pred: np.ndarray) -> float:
    """AJI of Kumar et al. (2017); see the module docstring."""
    true, pred = np.asarray(true), np.asarray(pred)
    joint = _joint_histogram(true, pred)
    iou, intersection = _iou(joint)
    n_true, n_pred = iou.shape
    if n_true == 0 and n_pred == 0:
        return 1.0
    if n_true == 0 or n_pred == 0:
        return 0.0
    area_true = joint[1:, :].sum(axis=1)
    area_pred = joint[:, 1:].sum(axis=0)
    order = _raster_order(pred)
    best = order[iou[:, order].argmax(axis=1)]
    overlaps = intersection[np.arange(n_true), best] > 0
    best = best[overlaps]
    inter = intersection[overlaps, best].sum()
    union = area_true.sum() + area_pred[best].sum() - inter
    unused = np.setdiff1d(np.arange(n_pred), best)
    return float(inter / (union + area_pred[unused].sum()))


@dataclass
class InstanceScores:
    n_true: int
    n_pred: int
    precision_50: float
    recall_50: float
    f1_50: float
    ap_50: float
    dsb_score: float
    aji: float
    panoptic_quality: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def instance_scores(
    true: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = DSB_THRESHOLDS
) -> InstanceScores:
    """All object-level scores of one image: precision/recall/F1/AP at IoU 0.5, the DSB score
    (mean AP over ``thresholds``), AJI and panoptic quality."""
    iou, _ = iou_matrix(true, pred)
    at_50 = match_counts(iou, 0.5)
    return InstanceScores(
        n_true=iou.shape[0],
        n_pred=iou.shape[1],
        precision_50=at_50.precision,
        recall_50=at_50.recall,
        f1_50=at_50.f1,
        ap_50=at_50.average_precision,
        dsb_score=float(np.mean([match_counts(iou, t).average_precision for t in thresholds])),
        aji=aggregated_jaccard_index(true, pred),
        panoptic_quality=match_counts(iou, 0.5 + 1e-9).panoptic_quality,
    )
