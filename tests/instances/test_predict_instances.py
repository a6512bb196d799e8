"""`unetkit predict --instances`: label images, object tables and COCO JSON from a RUN folder."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unetkit.cli import main
from unetkit.data.classes import ClassInfo
from unetkit.data.normalize import NormalizeConfig
from unetkit.export import export_run, predictor_for, read_contract
from unetkit.inference import Predictor
from unetkit.models import PlainFCN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from inference_helpers import make_run  # noqa: E402


def intensity_model(weights: list[float], biases: list[float], dims: int = 2) -> PlainFCN:
    """A 1x1 conv on the normalised intensity: class k has logit ``weights[k] * x + biases[k]``."""
    model = PlainFCN(1, len(weights), dims=dims, num_layers=0)
    with torch.no_grad():
        model.body[-1].weight.copy_(torch.tensor(weights).view(-1, 1, *([1] * dims)))
        model.body[-1].bias.copy_(torch.tensor(biases))
    return model.eval()


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


#: Logits of background / interior / border from the normalised intensity: 0 -> background, 0.5 ->
#: border, 1 -> interior.
THREE_CLASS_LOGITS = ([-40.0, 40.0, 0.0], [10.0, -30.0, 0.0])


def touching_squares() -> np.ndarray:
    """Two 24 px squares touching along x = 30, each a border ring (128) around an interior (255)."""
    image = np.zeros((40, 60), dtype=np.uint8)
    image[8:32, 6:30] = 128
    image[8:32, 30:54] = 128
    image[11:29, 9:27] = 255
    image[11:29, 33:51] = 255
    return image


def test_watershed_route_writes_labels_table_and_coco(tmp_path):
    run = make_run(tmp_path, intensity_model([20.0], [-10.0]), ClassInfo.binary(),
                   NormalizeConfig(mode="fixed"))
    image = np.zeros((48, 64), dtype=np.uint8)
    yy, xx = np.mgrid[:48, :64]
    image[((yy - 24) ** 2 + (xx - 20) ** 2) <= 81] = 200   # two touching discs
    image[((yy - 24) ** 2 + (xx - 36) ** 2) <= 81] = 200
    image[5:9, 50:58] = 255                                 # and a separate rectangle
    src = save_png(tmp_path / "in" / "cells.png", image)
    out = tmp_path / "out"
    assert main(["predict", str(run), str(src), "--out", str(out), "--instances", "--min-distance", "5"]) == 0
    labels = tifffile.imread(out / "cells_instances.tif")
    assert labels.max() == 3
    rows = list(csv.DictReader((out / "cells_objects.csv").open()))
    assert len(rows) == 3 and {"area", "centroid_y", "bbox_min_x", "mean_intensity_0"} <= set(rows[0])
    rectangle = [r for r in rows if r["area"] == "32"]
    assert rectangle and rectangle[0]["bbox_min_x"] == "50"
    coco = json.loads((out / "objects_coco.json").read_text())
    assert coco["images"][0]["file_name"] == "cells.png" and len(coco["annotations"]) == 3


def test_three_class_run_uses_the_border_route(tmp_path):
    model = intensity_model(*THREE_CLASS_LOGITS)
    run = make_run(tmp_path, model, ClassInfo.three_class(), NormalizeConfig(mode="fixed"))
    src = save_png(tmp_path / "in" / "pair.png", touching_squares())
    out = tmp_path / "out"
    assert main(["predict", str(run), str(src), "--out", str(out), "--instances"]) == 0
    labels = tifffile.imread(out / "pair_instances.tif")
    assert labels.max() == 2
    assert (labels > 0).sum() == 2 * 24 * 24


def test_three_class_run_writes_masks_in_the_datasets_encoding(tmp_path):
    """A run as `unetkit train --target three-class` writes it: the dataset's classes (0/255 masks) in
    classes.json, the target in config.json. Masks come back 0/255, objects by the border route."""
    model = intensity_model(*THREE_CLASS_LOGITS)
    run = make_run(tmp_path, model, ClassInfo.binary(), NormalizeConfig(mode="fixed"))
    config = json.loads((run / "config.json").read_text())
    config["data"]["target"] = "three_class"
    (run / "config.json").write_text(json.dumps(config))
    image = touching_squares()
    src = save_png(tmp_path / "in" / "pair.png", image)
    out = tmp_path / "out"
    assert main(["predict", str(run), str(src), "--out", str(out), "--instances"]) == 0
    mask = np.asarray(Image.open(out / "pair.png"))
    assert set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 2 * 24 * 24
    assert tifffile.imread(out / "pair_instances.tif").max() == 2

    assert Predictor.from_run(run).target == "three_class"
    onnx = export_run(run, "onnx", tmp_path / "net.onnx")
    assert read_contract(onnx)["target"] == "three_class"
    exported = predictor_for(onnx, "onnxruntime", device="cpu")
    assert exported.target == "three_class" and set(np.unique(exported.predict(image))) == {0, 1}

def test_instances_need_a_foreground_or_three_class_model(tmp_path, capsys):
    run = make_run(tmp_path, intensity_model([1.0, 2.0, 3.0, 4.0], [0.0] * 4),
                   ClassInfo([f"c{i}" for i in range(4)]), NormalizeConfig(mode="fixed"))
    src = save_png(tmp_path / "in" / "x.png", np.zeros((16, 16)))
    assert main(["predict", str(run), str(src), "--out", str(tmp_path / "out"), "--instances"]) == 1
    assert "three_class" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["components", "watershed"])
def test_3d_volume_gets_labels_and_table_without_coco(tmp_path, method):
    run = make_run(tmp_path, intensity_model([20.0], [-10.0], dims=3), ClassInfo.binary(),
                   NormalizeConfig(mode="fixed"))
    volume = np.zeros((6, 20, 20), dtype=np.uint8)
    volume[1:5, 3:9, 3:9] = 255
    src = tmp_path / "in" / "vol.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, volume)
    out = tmp_path / "out"
    args = ["predict", str(run), str(src), "--out", str(out), "--instances", "--instance-method", method]
    assert main(args) == 0
    labels = tifffile.imread(out / "vol_instances.tif")
    assert labels.shape == (6, 20, 20) and labels.max() == 1 and (labels > 0).sum() == 4 * 6 * 6
    assert (out / "vol_objects.csv").is_file() and not (out / "objects_coco.json").exists()


def test_evaluate_scores_objects_against_instances(tmp_path):
    run = make_run(tmp_path, intensity_model([20.0], [-10.0]), ClassInfo.binary(),
                   NormalizeConfig(mode="fixed"))
    data = tmp_path / "data"
    yy, xx = np.mgrid[:48, :64]
    first = ((yy - 24) ** 2 + (xx - 20) ** 2) <= 81
    second = (((yy - 24) ** 2 + (xx - 36) ** 2) <= 81) & ~first
    instances = (first * 1 + second * 2).astype(np.uint16)
    save_png(data / "images" / "pair.png", (instances > 0) * 200)
    save_png(data / "masks" / "pair.png", (instances > 0) * 255)
    (data / "instances").mkdir()
    tifffile.imwrite(data / "instances" / "pair.tif", instances)
    out = tmp_path / "report"
    assert main(["evaluate", str(run), str(data), "--out", str(out), "--instances"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dice"] == 1.0
    assert summary["ap_50"] == 1.0 and summary["f1_50"] == 1.0 and summary["n_true"] == 2
    assert summary["aji"] > 0.9
    assert main(["evaluate", str(run), str(data), "--out", str(out), "--instances",
                 "--instance-method", "components"]) == 0
    merged = json.loads((out / "summary.json").read_text())
    assert merged["n_pred"] == 1 and merged["ap_50"] == 0.5  # the two touching discs stay one object
    assert "ap_50" in (out / "report.md").read_text()
