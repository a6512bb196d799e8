"""Does a network give the same labels in reduced precision? Measured per run, recorded in the run.

bfloat16 keeps 8 significant bits: a pixel whose class probabilities are close may change its label.
How many do depends on the network and its data (BENCHMARKS.md, issue 16: 99.94-99.95% identical labels
on ISBI, but 99.78% on dsb2018, where a changed object-size estimate moves a whole second pass, and 99.0%
on an undertrained 11-class CamVid run). So ``precision="auto"`` does not assume it: at the end of
training a segmentation run predicts its validation images in float32 and in bfloat16 and writes the
share of identical labels to ``RUN/precision.json``; :class:`~unetkit.inference.Predictor` then uses
reduced precision for that run only when the share is at least :data:`MIN_AGREEMENT`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

AGREEMENT_FILE = "precision.json"
MIN_AGREEMENT = 0.999


def label_agreement(make_predictor: Callable[[str], Any], images: Sequence[np.ndarray]) -> float:
    """Share of pixels, over all ``images``, whose label is the same from ``make_predictor("bf16")`` as
    from ``make_predictor("fp32")`` (each image as the predictor takes it)."""
    exact, reduced = make_predictor("fp32"), make_predictor("bf16")
    same = total = 0
    for image in images:
        a, b = exact.predict(image), reduced.predict(image)
        same += int((a == b).sum())
        total += a.size
    return same / max(total, 1)


def agreement_record(agreement: float, images: int) -> dict[str, Any]:
    return {
        "bf16_label_agreement": agreement, "images": images, "threshold": MIN_AGREEMENT,
        "reduced_precision": agreement >= MIN_AGREEMENT,
        "measured_on": "the validation images, at the end of training",
    }


def read_agreement(run_dir: Union[str, Path]) -> Optional[float]:
    """The recorded share of identical labels of a RUN folder, ``None`` when it was not measured (or the
    record is damaged: then nothing is assumed either way and the hardware decides)."""
    path = Path(run_dir) / AGREEMENT_FILE
    try:
        value = json.loads(path.read_text())["bf16_label_agreement"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None
