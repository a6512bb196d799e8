"""Segmentation metrics: Dice, IoU, precision/recall, pixel error, Hausdorff 95 and the ISBI 2012 Rand and
pixel errors.

All functions take integer label maps (numpy arrays ``(H, W)`` or ``(D, H, W)``, class ids
``0..K-1``, with ``ignore_index`` where a pixel is not scored); prediction first, truth second.

Empty cases (a class absent from the truth, the prediction, or both):
- Dice, IoU, precision and recall: a ratio whose denominator is 0 is **1.0 when truth and
  prediction agree that the class is absent, and 0.0 otherwise** (e.g. Dice of an empty
  prediction on an empty truth is 1.0; recall for a class absent from the truth but predicted
  somewhere is 0.0 because its precision is then 0.0 too, and Dice is 0.0).
- Multi-class means (``mean_dice``, ``mean_iou``) average over the classes present in the truth
  or the prediction of that image, so classes absent from both do not inflate them; the dataset
  scores (``global_dice``, ``global_iou``) likewise average over the classes present somewhere in
  the dataset and name the others in ``absent_classes``. For a binary problem (``K == 2``)
  ``dice``/``iou``/``precision``/``recall`` are the foreground (class 1) values.
- Hausdorff 95: 0.0 when both masks are empty, ``nan`` (undefined) when exactly one is: a miss.
  An image's ``hd95`` is ``nan`` when any of its scored classes is a miss; dataset means leave
  those images out and ``hd95_misses`` counts them.
- Rand error: a truth with no cells (all membrane) scores no pixel, so the error is 0.0.

The warping error of the ISBI 2012 challenge (topological mistakes after simple-point warping, as the
challenge's script computes it) is :func:`unetkit.warping.warping_error`, exported here too.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
from scipy import ndimage, sparse
from skimage.measure import label as connected_components

# Object-level scores live in their own module; they are part of this public namespace too.
from .instance_metrics import (  # noqa: F401
    DSB_THRESHOLDS,
    InstanceScores,
    aggregated_jaccard_index,
    instance_scores,
    iou_matrix,
    match_counts,
)
from .warping import warping_error  # noqa: F401


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore_index: Optional[int] = None
) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class (ignored pixels skipped)."""
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} must have the same shape")
    keep = np.ones(truth.shape, dtype=bool) if ignore_index is None else truth != ignore_index
    t = truth[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    for name, values in (("truth", t), ("prediction", p)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} has class ids outside 0..{num_classes - 1} (found {values.min()}..{values.max()}); "
                "set num_classes or ignore_index to match the data"
            )
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, absent_in_both: np.ndarray) -> np.ndarray:
    """``numerator / denominator``; where the denominator is 0: 1.0 if ``absent_in_both`` else 0.0."""
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    out = np.where(absent_in_both, 1.0, 0.0)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _class_counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives, false negatives and 'absent from both' per class."""
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    absent = (tp + fp + fn) == 0
    return tp, fp, fn, absent


def _in_play(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` bool: the classes present in the truth or the prediction (all of them when none is,
    i.e. when no pixel is scored), the classes that multi-class means average over."""
    absent = _class_counts(cm)[3]
    return ~absent if (~absent).any() else np.ones_like(absent)


def dice_per_class(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` Dice ``2TP / (2TP + FP + FN)`` from a confusion matrix."""
    tp, fp, fn, absent = _class_counts(cm)
    return _ratio(2 * tp, 2 * tp + fp + fn, absent)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` IoU (Jaccard) ``TP / (TP + FP + FN)`` from a confusion matrix."""
    tp, fp, fn, absent = _class_counts(cm)
    return _ratio(tp, tp + fp + fn, absent)


def precision_per_class(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` precision ``TP / (TP + FP)``."""
    tp, fp, fn, _ = _class_counts(cm)
    return _ratio(tp, tp + fp, tp + fp + fn == 0)


def recall_per_class(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` recall ``TP / (TP + FN)``."""
    tp, fp, fn, _ = _class_counts(cm)
    return _ratio(tp, tp + fn, tp + fp + fn == 0)


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of scored pixels with the right class (1.0 when nothing is scored)."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 1.0


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask: the mask minus its erosion (face connectivity)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hausdorff95(
    pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: Optional[Sequence[float]] = None
) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two bool masks.

    For each surface pixel of one mask the Euclidean distance (in ``spacing`` units, default
    pixels) to the nearest surface pixel of the other; the result is the larger of the two
    95th percentiles (the MONAI convention). 0.0 when both masks are empty, ``nan`` when one is.
    """
    pred_mask = np.asarray(pred_mask, dtype=bool)
    truth_mask = np.asarray(truth_mask, dtype=bool)
    if not pred_mask.any() and not truth_mask.any():
        return 0.0
    if not pred_mask.any() or not truth_mask.any():
        return math.nan
    pred_surface, truth_surface = _surface(pred_mask), _surface(truth_mask)
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=spacing)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[truth_surface]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def adapted_rand_error(segmentation: np.ndarray, truth: np.ndarray) -> float:
    """The ISBI 2012 / SNEMI3D adapted Rand error ``1 - F`` between two label images.

    ``truth`` 0 marks pixels that are not scored (membrane); ``segmentation`` 0 marks pixels
    the prediction leaves unassigned, each counted as its own singleton segment, exactly as in
    the challenges' evaluation script. Precision and recall are pair-counting scores of the
    contingency table ``p_ij`` (truth segment i, predicted segment j) over truth-foreground
    pixels: ``sum p_ij^2 / sum b_j^2`` and ``sum p_ij^2 / sum a_i^2``.
    """
    seg = np.asarray(segmentation).ravel().astype(np.int64)
    gt = np.asarray(truth).ravel().astype(np.int64)
    if seg.shape != gt.shape:
        raise ValueError(f"segmentation {np.shape(segmentation)} and truth {np.shape(truth)} differ in shape")
    n = seg.size
    p_ij = sparse.csr_matrix((np.ones(n), (gt, seg)), shape=(gt.max() + 1, seg.max() + 1))
    scored = p_ij[1:, :]
    assigned = p_ij[1:, 1:]
    singletons = p_ij[1:, 0].sum()
    a_i = np.asarray(scored.sum(axis=1)).ravel()
    b_j = np.asarray(assigned.sum(axis=0)).ravel()
    sum_a = float(a_i @ a_i)
    sum_b = float(b_j @ b_j) + singletons / n
    sum_ab = float(assigned.multiply(assigned).sum()) + singletons / n
    if sum_a == 0:
        return 0.0
    precision = sum_ab / sum_b
    recall = sum_ab / sum_a
    return 1.0 - 2.0 * precision * recall / (precision + recall)


def rand_error(pred: np.ndarray, truth: np.ndarray, *, foreground: int = 1, connectivity: int = 1) -> float:
    """Foreground-restricted Rand error of a boundary/cell map, as scored in ISBI 2012.

    Cells are the connected components (``connectivity=1``: 4-neighbours in 2D) of the
    ``foreground`` class in each map; pixels of any other class (membrane, boundary) in the
    truth are not scored, and in the prediction they are unassigned singletons. See
    :func:`adapted_rand_error`.
    """
    truth_cells = connected_components(np.asarray(truth) == foreground, connectivity=connectivity)
    pred_cells = connected_components(np.asarray(pred) == foreground, connectivity=connectivity)
    return adapted_rand_error(pred_cells, truth_cells)


#: Thresholds of the ISBI 2012 evaluation script: the challenge reported the best Rand score over them.
ISBI_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))


def rand_errors_by_threshold(
    foreground_probability: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] = ISBI_THRESHOLDS
) -> np.ndarray:
    """``(T,)`` :func:`rand_error` of one image with cells where the probability exceeds each threshold."""
    return np.array([rand_error((foreground_probability > t).astype(np.int64), truth) for t in thresholds])


def best_rand_error(
    errors: np.ndarray, thresholds: Sequence[float] = ISBI_THRESHOLDS
) -> tuple[float, float]:
    """The ISBI 2012 protocol: one threshold for the whole set, the one with the lowest mean Rand error.

    ``errors``: ``(N, T)`` from :func:`rand_errors_by_threshold` for N images. Returns ``(mean error,
    threshold)``. The threshold is picked on the scored images themselves, as the challenge did, so
    this is optimistic next to :func:`rand_error` at the usual 0.5.
    """
    means = np.asarray(errors, dtype=np.float64).reshape(-1, len(thresholds)).mean(axis=0)
    best = int(np.argmin(means))
    return float(means[best]), float(thresholds[best])


def pixel_counts_by_threshold(
    foreground_probability: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] = ISBI_THRESHOLDS
) -> np.ndarray:
    """``(T, 3)`` int64 true positive, false positive and false negative pixels of the foreground
    (``truth > 0``) where the probability exceeds each threshold; pixels to skip must be left out
    of both arrays beforehand."""
    probability = np.asarray(foreground_probability).ravel()
    positive = np.asarray(truth).ravel() > 0
    counts = []
    for t in thresholds:
        predicted = probability > t
        tp = int(np.count_nonzero(predicted & positive))
        counts.append((tp, int(np.count_nonzero(predicted)) - tp, int(np.count_nonzero(positive)) - tp))
    return np.array(counts, dtype=np.int64)


def best_pixel_error(
    counts: np.ndarray, thresholds: Sequence[float] = ISBI_THRESHOLDS
) -> tuple[float, float]:
    """The ISBI 2012 challenge's pixel error: ``1 -`` the maximal F-score of pixel similarity.

    ``counts``: ``(N, T, 3)`` from :func:`pixel_counts_by_threshold` for N images; the counts are
    summed over the images (as the challenge's script sums over the sections of the stack), the
    F-score ``2 TP / (2 TP + FP + FN)`` of the foreground (cell, non-membrane) class is computed
    at each threshold and the best one is kept. Returns ``(1 - F, threshold)``. This is the pixel
    error of the challenge's leaderboard and of the U-Net paper's table (0.0611); it is not the
    fraction of misclassified pixels (:func:`segmentation_metrics`' ``pixel_error``), which
    counts the same mistakes against all pixels instead of against the foreground F-score.
    """
    tp, fp, fn = np.asarray(counts, dtype=np.float64).reshape(-1, len(thresholds), 3).sum(axis=0).T
    denominator = 2 * tp + fp + fn
    f_score = np.divide(2 * tp, denominator, out=np.ones_like(tp), where=denominator > 0)
    best = int(np.argmax(f_score))
    return float(1.0 - f_score[best]), float(thresholds[best])


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def segmentation_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    *,
    ignore_index: Optional[int] = None,
    spacing: Optional[Sequence[float]] = None,
    class_names: Optional[Sequence[str]] = None,
    boundary_metrics: bool = True,
) -> dict[str, Any]:
    """Every metric for one image: a flat dict of floats (plus ``confusion``, the ``(K, K)`` matrix).

    Keys: ``pixel_accuracy``, ``pixel_error``, ``dice``, ``iou``, ``precision``, ``recall``
    (foreground for ``K == 2``, mean over the classes in play otherwise), ``mean_dice``,
    ``mean_iou``, per-class ``dice_<name>``/``iou_<name>``, and with ``boundary_metrics``
    ``hd95`` (foreground / mean over the classes in play; ``nan`` when one of them is a miss: in
    exactly one of prediction and truth) and, for ``K == 2``, ``rand_error``.
    Ignored pixels count as background for the boundary metrics' shapes but not in the scores.
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    cm = confusion_matrix(pred, truth, num_classes, ignore_index)
    dice, iou = dice_per_class(cm), iou_per_class(cm)
    precision, recall = precision_per_class(cm), recall_per_class(cm)
    in_play = _in_play(cm)
    scored = np.ones(truth.shape, bool) if ignore_index is None else truth != ignore_index
    out: dict[str, Any] = {"pixel_accuracy": pixel_accuracy(cm)}
    out["pixel_error"] = 1.0 - out["pixel_accuracy"]
    out["mean_dice"] = float(dice[in_play].mean())
    out["mean_iou"] = float(iou[in_play].mean())
    if num_classes == 2:
        fg = 1
        out.update(
            dice=float(dice[fg]), iou=float(iou[fg]), precision=float(precision[fg]), recall=float(recall[fg])
        )
    else:
        out.update(
            dice=out["mean_dice"],
            iou=out["mean_iou"],
            precision=float(precision[in_play].mean()),
            recall=float(recall[in_play].mean()),
        )
    for k, name in enumerate(names):
        out[f"dice_{name}"] = float(dice[k])
        out[f"iou_{name}"] = float(iou[k])
    if boundary_metrics:
        classes = [1] if num_classes == 2 else [k for k in range(num_classes) if in_play[k]]
        distances = [hausdorff95((pred == k) & scored, (truth == k) & scored, spacing) for k in classes]
        out["hd95"] = float(np.mean(distances))  # nan when any class is a miss
        if num_classes == 2:
            out["rand_error"] = rand_error(np.where(scored, pred, 0), np.where(scored, truth, 0))
    out["confusion"] = cm
    return out


def summarize(
    per_image: Sequence[dict[str, Any]], num_classes: int, class_names: Optional[Sequence[str]] = None
) -> dict[str, Any]:
    """Dataset summary: the mean of every per-image metric, plus ``global_*`` scores from the summed
    confusion matrix (the usual "mean IoU over the dataset" of multi-class benchmarks).

    Multi-class ``global_dice``/``global_iou`` average over the classes present somewhere in the
    dataset; ``absent_classes`` names the others (their per-class values are the 1.0 of "absent
    from both"). ``hd95`` is the mean over the images where it is defined and ``hd95_misses`` the
    number of images left out because a class was missed or predicted where there is none.
    """
    if not per_image:
        raise ValueError("no images to summarise")
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    keys = [k for k, v in per_image[0].items() if k != "confusion" and isinstance(v, (int, float))]
    summary: dict[str, Any] = {k: _nanmean([float(m[k]) for m in per_image]) for k in keys}
    cm = np.sum([m["confusion"] for m in per_image], axis=0)
    dice, iou = dice_per_class(cm), iou_per_class(cm)
    in_play = _in_play(cm)
    summary["global_pixel_accuracy"] = pixel_accuracy(cm)
    summary["global_dice"] = float(dice[1]) if num_classes == 2 else float(dice[in_play].mean())
    summary["global_iou"] = float(iou[1]) if num_classes == 2 else float(iou[in_play].mean())
    summary["global_iou_per_class"] = {name: float(v) for name, v in zip(names, iou)}
    summary["global_dice_per_class"] = {name: float(v) for name, v in zip(names, dice)}
    summary["absent_classes"] = [name for name, absent in zip(names, _class_counts(cm)[3]) if absent]
    if "hd95" in summary:
        summary["hd95_misses"] = sum(math.isnan(float(m["hd95"])) for m in per_image)
    summary["num_images"] = len(per_image)
    return summary
