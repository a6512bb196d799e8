"""Membrane data (EM): the closed-boundary route, the warping error and the plan's recognition."""

import numpy as np
import pytest
from PIL import Image
from skimage.measure import label

from unetkit.data.membrane import membrane_class_of, membrane_class_of_dataset
from unetkit.data.synthetic import make_synthetic_cells, make_synthetic_membranes
from unetkit.instances import (
    InstanceConfig,
    instances_from_foreground,
    instances_from_membranes,
    instances_from_probabilities,
    membrane_config,
)
from unetkit.training.evaluation import membrane_route_scores
from unetkit.training.planner import Machine, plan_training
from unetkit.warping import warping_error


def two_cells(gap_probability: float = 0.6) -> np.ndarray:
    """Probabilities ``(2, 40, 40)`` (membrane, cell): two cells split by a 2 px membrane with a 2 px gap."""
    cell = np.full((40, 40), 0.97, np.float32)
    cell[:, 19:21] = 0.03
    cell[12:14, 19:21] = gap_probability
    return np.stack([1.0 - cell, cell])


def test_watershed_closes_a_gap_that_components_leave_open():
    probabilities = two_cells()
    joined = instances_from_foreground(probabilities[1], InstanceConfig(method="components", min_size=1))
    assert joined.max() == 1
    labels, lines = instances_from_membranes(probabilities, membrane_config(0))
    assert labels.max() == 2
    assert labels[20, 5] != labels[20, 35]
    # The line runs through the gap: a one-pixel-wide cut between the two cells.
    assert lines[12:14, 18:22].any() and not lines[:, :15].any()
    assert (instances_from_probabilities(probabilities, membrane_config(0)) == labels).all()


def test_merging_weak_boundaries_joins_cells_the_membrane_does_not_separate():
    probabilities = two_cells()
    probabilities[0, :, 19:21] = 0.2  # a faint "membrane" everywhere
    probabilities[1] = 1.0 - probabilities[0]
    config = InstanceConfig(method="membrane", seed_threshold=0.9, merge_threshold=0.5, smoothing=0.0)
    # Seeds of a faint membrane still come apart, the weak line between them is merged away.
    assert instances_from_membranes(probabilities, InstanceConfig(
        method="membrane", seed_threshold=0.9, smoothing=0.0))[0].max() == 2
    labels, lines = instances_from_membranes(probabilities, config)
    assert labels.max() == 1 and not lines.any()


def test_route_on_a_true_probability_map_scores_perfectly():
    _, mask, _ = make_synthetic_membranes(96, n_cells=20, seed=3)
    probabilities = np.stack([1.0 - mask, mask]).astype(np.float32)
    truth = mask.astype(np.int64)
    labels, metrics, counts = membrane_route_scores(probabilities, truth, membrane_config(0))
    assert metrics["route_rand_error"] < 1e-3
    assert metrics["warping_error"] == 0.0
    # The lines the watershed draws lie on the membrane, so the mask keeps every cell pixel.
    assert counts[0, 1] == 0 and counts[0, 2] == 0
    sizes = np.bincount(label(mask, connectivity=1).ravel())[1:]
    assert labels.max() == np.count_nonzero(sizes >= membrane_config(0).min_size)  # no cell lost or split


def test_warping_error_hand_cases():
    truth = np.zeros((40, 40), np.uint8)
    truth[5:35, 5:19] = 1
    truth[5:35, 21:35] = 1
    shifted = np.roll(truth, 1, axis=1).astype(np.float32)
    assert warping_error(shifted, truth) == 0.0  # a boundary moved by a pixel is no topological error
    split = truth.astype(np.float32)
    split[20, 5:19] = 0
    assert warping_error(split, truth) == pytest.approx(1 / 1600)  # one pixel keeps the cut open
    merged = truth.astype(np.float32)
    merged[5:35, 19:21] = 1
    assert warping_error(merged, truth) > 0
    lost = truth.astype(np.float32)
    lost[5:35, 21:35] = 0
    assert warping_error(lost, truth) > 0
    # Probabilities and masks agree at the threshold; stacks average their sections.
    assert warping_error(np.stack([shifted, split]), np.stack([truth, truth])) == pytest.approx(0.5 / 1600)
    with pytest.raises(ValueError, match="shape"):
        warping_error(shifted, truth[:-1])


def test_membrane_recognition():
    _, mask, _ = make_synthetic_membranes(128, seed=1)
    assert membrane_class_of(mask.astype(np.int64), 2) == 0
    assert membrane_class_of(1 - mask.astype(np.int64), 2) == 1  # white membranes on dark cells
    cells = make_synthetic_cells(128, seed=1)  # nuclei on a wide background: not membrane data
    assert membrane_class_of(cells.semantic.astype(np.int64), 2) is None
    assert membrane_class_of(mask.astype(np.int64), 3) is None
    assert membrane_class_of_dataset([0, 0, None]) == 0
    assert membrane_class_of_dataset([0, None, None]) is None


def test_plan_sends_membrane_data_to_the_membrane_route(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        image, mask, _ = make_synthetic_membranes(96, n_cells=20, seed=i)
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "images" / f"{i:02d}.png")
        Image.fromarray(mask * np.uint8(255)).save(tmp_path / "masks" / f"{i:02d}.png")
    plan = plan_training(tmp_path, machine=Machine("cpu", cpus=2, memory_gb=8.0), measure=False)
    assert plan.config.data.membrane_class == 0
    assert any("membrane route" in r for r in plan.reasons)


def test_predict_instances_on_a_membrane_run_closes_cells_in_labels_and_mask(tmp_path):
    """A membrane run (``data.membrane_class`` 0) whose map leaves a gap: the labels and the mask close it."""
    import json
    import sys
    from pathlib import Path

    import tifffile
    import torch

    from unetkit.cli import main
    from unetkit.data.classes import ClassInfo
    from unetkit.data.normalize import NormalizeConfig
    from unetkit.models import PlainFCN

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
    from inference_helpers import make_run

    model = PlainFCN(1, 1, dims=2, num_layers=1, base_channels=1)  # cell logit = 40 (x - 0.5)
    with torch.no_grad():
        for conv in (model.body[0], model.body[-1]):
            conv.weight.zero_()
            conv.bias.zero_()
        model.body[0].weight[0, 0, 1, 1] = 1.0
        model.body[-1].weight.fill_(40.0)
        model.body[-1].bias.fill_(-20.0)
    run = make_run(tmp_path, model.eval(), ClassInfo.binary(), NormalizeConfig(mode="fixed"))
    config = json.loads((run / "config.json").read_text())
    config["data"]["membrane_class"] = 0
    (run / "config.json").write_text(json.dumps(config))
    image = np.full((40, 40), 250, np.uint8)
    image[:, 19:21] = 5
    image[12:14, 19:21] = 140  # a gap the thresholded map fills
    Image.fromarray(image).save(tmp_path / "section.png")
    out = tmp_path / "out"
    # float32 PyTorch, so that the exported (float32) network below can be compared pixel for pixel
    assert main(["predict", str(run), str(tmp_path / "section.png"), "--out", str(out), "--instances",
                 "--backend", "torch", "--precision", "fp32"]) == 0
    cells = tifffile.imread(out / "section_instances.tif")
    assert cells.max() == 2 and cells[20, 5] != cells[20, 35]
    mask = np.asarray(Image.open(out / "section.png")) > 0
    assert label(mask, connectivity=1).max() == 2  # the line is drawn in as membrane
    assert mask[:, :17].all()  # and the membranes keep their width elsewhere
    truth = np.where(image > 100, 255, 0).astype(np.uint8)
    truth[12:14, 19:21] = 0  # the truth's membrane is closed
    data = tmp_path / "data"
    for sub, array in (("images", image), ("masks", truth)):
        (data / sub).mkdir(parents=True)
        Image.fromarray(array).save(data / sub / "section.png")
    report = tmp_path / "eval"
    assert main(["evaluate", str(run), str(data), "--out", str(report)]) == 0
    summary = json.loads((report / "summary.json").read_text())
    # The route closes the gap; the thresholded map (the per-image scores at 0.5) merges the two cells.
    assert summary["route_rand_error"] < 0.01 < summary["rand_error"]
    assert summary["warping_error"] == 0.0 and summary["route_pixel_error"] < 0.02

    # The membrane class travels with exported models and reaches the server's objects too.
    from unetkit.inference import Predictor
    from unetkit.serve.objects import object_labels

    exported = tmp_path / "section_model.onnx"
    assert main(["export", str(run), "--out", str(exported)]) == 0
    out_onnx = tmp_path / "out_onnx"
    assert main(["predict", str(exported), str(tmp_path / "section.png"), "--out", str(out_onnx),
                 "--instances", "--backend", "onnxruntime"]) == 0
    assert np.array_equal(tifffile.imread(out_onnx / "section_instances.tif"), cells)
    predictor = Predictor.from_run(run, precision="fp32")
    assert predictor.membrane_class == 0
    probabilities = predictor.predict_proba(image)
    served = object_labels(probabilities, np.zeros(image.shape, np.int64), ClassInfo.binary(), 0.5,
                           predictor.target, predictor.membrane_class)
    assert np.array_equal(served, cells)
