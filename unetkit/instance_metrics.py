"""Object-level scores: predicted objects matched to true objects by IoU.

Definitions (label images: 0 = background, each object its own id; 2D or 3D):

* matching at threshold ``t``: a one-to-one assignment of predicted to true objects that
  maximises the total IoU among pairs with IoU >= ``t`` (Hungarian; for ``t >= 0.5`` every pair
  above the threshold is unique anyway). Matched pairs are true positives (TP), unmatched
  predictions false positives (FP), unmatched true objects false negatives (FN).
* precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN).
* average precision as in the StarDist paper and the 2018 Data Science Bowl:
  AP(t) = TP / (TP + FP + FN); the DSB score is the mean of AP(t) over t = 0.5, 0.55, ..., 0.95.
* aggregated Jaccard index (Kumar et al. 2017): every true object is paired with the predicted
  object of highest IoU; AJI = sum |G ∩ S| / (sum |G ∪ S| + area of predictions never used).
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


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of every true object (rows) with every predicted object (columns), and the
    intersection counts, both ``(n_true, n_pred)``. Computed from one joint histogram."""
    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: truth {true.shape}, prediction {pred.shape}")
    t, n_true = _dense_ids(np.asarray(true))
    p, n_pred = _dense_ids(np.asarray(pred))
    joint = np.bincount(t.ravel() * (n_pred + 1) + p.ravel(), minlength=(n_true + 1) * (n_pred + 1))
    joint = joint.reshape(n_true + 1, n_pred + 1)
    intersection = joint[1:, 1:].astype(np.float64)
    area_true = joint[1:, :].sum(axis=1, keepdims=True)
    area_pred = joint[:, 1:].sum(axis=0, keepdims=True)
    union = area_true + area_pred - intersection
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    return iou, intersection


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
    """TP/FP/FN of the best one-to-one matching among pairs with IoU >= ``threshold``."""
    n_true, n_pred = iou.shape
    if n_true == 0 or n_pred == 0:
        return MatchCounts(threshold, 0, n_pred, n_true, 0.0)
    candidate = iou >= threshold
    if threshold > 0.5:  # pairs above 0.5 IoU are unique: no assignment problem
        rows, cols = np.nonzero(candidate)
    else:
        rows, cols = linear_sum_assignment(np.where(candidate, iou, 0.0), maximize=True)
        keep = candidate[rows, cols]
        rows, cols = rows[keep], cols[keep]
    tp = len(rows)
    mean_iou = float(iou[rows, cols].mean()) if tp else 0.0
    return MatchCounts(threshold, tp, n_pred - tp, n_true - tp, mean_iou)


def aggregated_jaccard_index(true: np.ndarray, pred: np.ndarray) -> float:
    """AJI of Kumar et al. (2017); see the module docstring."""
    iou, intersection = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    if n_true == 0 and n_pred == 0:
        return 1.0
    if n_true == 0 or n_pred == 0:
        return 0.0
    t, _ = _dense_ids(np.asarray(true))
    p, _ = _dense_ids(np.asarray(pred))
    area_true = np.bincount(t.ravel(), minlength=n_true + 1)[1:]
    area_pred = np.bincount(p.ravel(), minlength=n_pred + 1)[1:]
    best = iou.argmax(axis=1)
    inter = intersection[np.arange(n_true), best]
    union = area_true + area_pred[best] - inter
    unused = np.setdiff1d(np.arange(n_pred), best)
    return float(inter.sum() / (union.sum() + area_pred[unused].sum()))


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
