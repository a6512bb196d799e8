"""The evaluation report: which images it shows as the worst and how it states its means."""

from __future__ import annotations

import numpy as np

from unetkit.data.classes import ClassInfo
from unetkit.metrics import segmentation_metrics
from unetkit.training.evaluation import Scored, worst_first, write_report


def _scored(name: str, pred: np.ndarray, truth: np.ndarray, classes: ClassInfo) -> Scored:
    metrics = segmentation_metrics(pred, truth, classes.num_classes, class_names=classes.names)
    return Scored(name, truth[None].astype(np.float32), truth, pred, metrics)


def _binary_images() -> list[Scored]:
    classes = ClassInfo.binary()
    truth = np.zeros((12, 12), np.int64)
    truth[3:8, 3:8] = 1
    shifted = np.roll(truth, 2, axis=1)
    return [
        _scored("perfect", truth, truth, classes),
        _scored("nothing_found", np.zeros_like(truth), truth, classes),
        _scored("shifted", shifted, truth, classes),
    ]


def test_an_image_where_nothing_was_found_is_the_worst_by_hd95():
    ranked = [s.name for s in worst_first(_binary_images(), "hd95")]
    assert ranked == ["nothing_found", "shifted", "perfect"]
    assert [s.name for s in worst_first(_binary_images(), "dice")][0] == "nothing_found"


def test_report_shows_misses_first_and_says_how_the_mean_hd95_counts_them(tmp_path):
    summary = write_report(tmp_path, _binary_images(), ClassInfo.binary(), title="t", metric="hd95", worst=1)
    assert summary["hd95_misses"] == 1 and summary["hd95"] == 1.0  # mean of 0 and 2 px
    report = (tmp_path / "report.md").read_text()
    assert "### nothing_found: hd95" in report
    assert "mean over the 2 images where it is defined; 1 with a class missed" in report


def test_report_names_classes_absent_from_the_whole_dataset(tmp_path):
    classes = ClassInfo(["background", "cell", "debris", "dust"])
    truth = np.zeros((6, 6), np.int64)
    truth[1:3, 1:3] = 1
    summary = write_report(tmp_path, [_scored("a", truth, truth, classes)], classes, title="t")
    assert summary["global_iou"] == 1.0 and summary["absent_classes"] == ["debris", "dust"]
    assert "left out: debris, dust" in (tmp_path / "report.md").read_text()
