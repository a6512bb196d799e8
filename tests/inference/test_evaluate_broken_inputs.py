"""`unetkit evaluate` on datasets with broken images and broken masks (tests/broken_corpus.py): the good
images are scored, each broken file is named once with its reason, and the exit code is 1."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from broken_corpus import (
    BROKEN,
    BROKEN_MASKS,
    GOOD,
    assert_each_named_once,
    corpus_files,
    labelled_corpus,
    write_corpus,
)
from inference_helpers import make_run, tiny_unet

from unetkit.cli import main
from unetkit.data.classes import ClassInfo
from unetkit.data.io import read_image, stem_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_helpers import make_restoration_run  # noqa: E402


def test_evaluate_scores_the_good_images_and_names_each_broken_file(tmp_path, capsys, one_thread):
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    data = labelled_corpus(tmp_path / "data set")
    out = tmp_path / "report"
    code = main(["evaluate", str(run), str(data), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    # A 3D stack with a 2D mask fails on the sizes; a palette image reads as RGB: wrong channels.
    assert_each_named_once(captured.out, {**BROKEN, "stack.tif": "differs", **BROKEN_MASKS})
    with open(out / "per_image.csv", newline="") as fh:
        scored = sorted(row["image"] for row in csv.DictReader(fh))
    assert scored == sorted(stem_of(n) for n in GOOD)
    for name in GOOD:
        assert read_image(out / "masks" / f"{stem_of(name)}.png").size
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["failed"]) == len(BROKEN) + len(BROKEN_MASKS)
    assert f"{len(summary['failed'])} file(s) not scored" in (out / "report.md").read_text()


def test_restoration_evaluate_scores_the_good_pairs(tmp_path, capsys, one_thread):
    run = make_restoration_run(tmp_path / "restore")
    data = tmp_path / "pairs"
    names = ("good.png", "cut short.tif", "nan.tif")
    write_corpus(data / "inputs", names)
    targets = data / "targets"
    targets.mkdir()
    for name in names:
        (targets / name).write_bytes(corpus_files()["good.png"])
    (data / "inputs" / "bad target.png").write_bytes(corpus_files()["good.png"])
    (targets / "bad target.png").write_bytes(corpus_files()["html page.tif"])
    out = tmp_path / "report"
    code = main(["evaluate", str(run), str(data), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert_each_named_once(captured.out, {"cut short.tif": "truncated", "nan.tif": "nan",
                                          "bad target.png": "cannot be read"})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 1 and len(summary["failed"]) == 3
