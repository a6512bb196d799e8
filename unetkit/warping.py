"""The warping error of the ISBI 2012 challenge (Jain et al. 2010), the third figure of the U-Net paper.

The truth is warped onto the prediction by flipping *simple points* only (pixels whose flip changes
neither the number of objects nor their connections), as long as that removes mismatches; what still
differs afterwards are the topological mistakes (splits, merges, added or lost objects). The error
is their number over the number of pixels, averaged over the sections.

Follows the challenge's own script (Fiji's ``trainableSegmentation.metrics.WarpingError``): the cells
(truth > 0, prediction > threshold) are the objects, 4-connected; a point is simple when the cell
pixels of its 3x3 neighbourhood that touch it form exactly one 4-connected group (the script decides
simplicity in a 2D section embedded in 3D, where the background's own topology never blocks a flip,
so filling or opening a one-pixel hole counts as a deformation, not a mistake). Each pass visits the
mismatched pixels in the order of decreasing confidence of the prediction (``|p - threshold|``; the
script's column-major order among equals), flipping every one that is simple at that moment; passes
repeat until no mismatch is left or a pass removes none.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

#: Offsets (row, column) of the 3x3 neighbourhood in the order of the bits of a pattern code.
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_FOUR = (1, 3, 4, 6)  # the bits of the 4-neighbours (up, left, right, down)


def _simple_lookup() -> np.ndarray:
    """``(256,)`` bool: is the centre simple for the neighbourhood pattern with this code?"""
    table = np.zeros(256, dtype=bool)
    for code in range(256):
        patch = np.zeros((3, 3), dtype=bool)
        for bit, (dy, dx) in enumerate(_OFFSETS):
            patch[1 + dy, 1 + dx] = bool(code >> bit & 1)
        groups, _ = ndimage.label(patch)  # 4-connected groups of the ring, centre excluded
        touching = {groups[1 + _OFFSETS[b][0], 1 + _OFFSETS[b][1]] for b in _FOUR} - {0}
        table[code] = len(touching) == 1
    return table


_SIMPLE = _simple_lookup()


def warp_onto(source: np.ndarray, target: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Warp the binary ``source`` ``(H, W)`` towards the binary ``target`` by simple-point flips.

    ``confidence`` ``(H, W)``: the visiting order within a pass (highest first). Returns the warped
    source (bool); the pixels where it still differs from ``target`` are the topological mistakes.
    """
    height, width = source.shape
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = source
    flat = padded.ravel()
    goal = np.zeros_like(padded)
    goal[1:-1, 1:-1] = target
    goal_flat = goal.ravel()
    stride = width + 2
    neighbours = [dy * stride + dx for dy, dx in _OFFSETS]
    weights = [1 << bit for bit in range(8)]
    # Column-major index of every padded pixel: the script's order among equally confident pixels.
    order_key = np.zeros_like(padded, dtype=np.float64)
    order_key[1:-1, 1:-1] = confidence
    column_major = np.arange(padded.size).reshape(padded.shape, order="F").ravel()
    previous = -1
    while True:
        mismatched = np.flatnonzero(flat != goal_flat)
        if mismatched.size == 0 or mismatched.size == previous:
            break
        previous = mismatched.size
        visit = mismatched[np.lexsort((column_major[mismatched], -order_key.ravel()[mismatched]))]
        for index in visit.tolist():
            code = 0
            for offset, weight in zip(neighbours, weights):
                if flat[index + offset]:
                    code |= weight
            if _SIMPLE[code]:
                flat[index] = not flat[index]
    return padded[1:-1, 1:-1].copy()


def warping_error(
    prediction: np.ndarray, truth: np.ndarray, threshold: float = 0.5
) -> float:
    """The ISBI 2012 warping error of one section or a stack ``(H, W)`` / ``(D, H, W)``.

    ``prediction``: cell probability (or a 0/1 cell mask) per pixel, cells where it exceeds
    ``threshold``; ``truth``: cell (non-membrane) pixels > 0. Sections are scored one by one (as the
    challenge did) and their errors averaged. A one-pixel shift of a boundary scores 0; every
    split, merge, lost or added object leaves at least one pixel.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    truth = np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    if prediction.ndim not in (2, 3):
        raise ValueError(
            f"the warping error scores 2D sections (H, W) or stacks (D, H, W), got {prediction.shape}"
        )
    sections: Sequence[tuple[np.ndarray, np.ndarray]] = (
        [(prediction, truth)] if prediction.ndim == 2 else list(zip(prediction, truth))
    )
    errors = []
    for probability, cells in sections:
        target = probability > threshold
        warped = warp_onto(cells > 0, target, np.abs(probability - threshold))
        errors.append(np.count_nonzero(warped != target) / target.size)
    return float(np.mean(errors))
