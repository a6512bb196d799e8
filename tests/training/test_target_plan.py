"""The plan's target from how crowded the objects are (touching objects, spread of their sizes)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage.draw import disk

from unetkit.cli import main
from unetkit.data.synthetic import write_synthetic_dataset
from unetkit.training.planner import Machine, plan_training
from unetkit.training.target_plan import CROWDED_TARGET, DENSE_TARGET, choose_target, object_crowding

CPU = Machine("cpu", cpus=2, memory_gb=8.0)
BINARY = ["background", "foreground"]


def write_discs(root, n=3, size=96):
    """Binary masks of discs well apart from each other (no instances/: their components)."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        for centre in ((20, 20), (20, 70), (70, 45)):
            mask[disk(centre, 8 + i, shape=mask.shape)] = 255
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
        Image.fromarray(mask // 2 + 20).save(root / "images" / f"{i}.png")
    return root


def test_object_crowding_counts_touching_objects_and_the_size_spread():
    labels = np.zeros((64, 96), np.int32)
    for i, (centre, radius) in enumerate([((16, 16), 4), ((16, 60), 12), ((16, 80), 9), ((50, 20), 6)], 1):
        inside = np.zeros(labels.shape, bool)
        inside[disk(centre, radius, shape=labels.shape)] = True
        labels[inside & (labels == 0)] = i  # 3 overlaps 2: they touch
    touching, spread = object_crowding(labels)
    assert touching == 0.5 and spread > 2.0
    assert object_crowding(np.zeros((8, 8), np.int32)) is None


def test_choose_target_rules():
    assert choose_target([(0.5, 1.5), (0.3, 2.0)], BINARY)[0] == CROWDED_TARGET == "three_class"
    assert choose_target([(0.1, 4.0)], BINARY)[0] == CROWDED_TARGET  # some touch, sizes vary a lot
    target, why = choose_target([(0.9, 1.5), (0.6, 2.0)], BINARY)  # most touch
    assert target == DENSE_TARGET == "flows" and "75% of the objects touch" in why
    target, why = choose_target([(0.1, 1.5)], BINARY)
    assert target == "semantic" and "10% of the objects touch" in why
    assert choose_target([(0.9, 1.0)], ["a", "b", "c"])[0] == "semantic"
    assert choose_target([(0.9, 1.0)], BINARY, membrane_class=0)[0] == "semantic"
    assert choose_target([], BINARY)[0] == "semantic"


def test_plan_picks_the_flows_target_for_crowded_cells_only(tmp_path):
    cells = write_synthetic_dataset(tmp_path / "cells", 2, size=96, seed=0)
    plan = plan_training(cells, machine=CPU, measure=False)
    c = plan.config
    assert c.data.target == "flows" and c.model.num_classes == 3 and c.loss.name == "ce_dice"
    assert plan.reasons[0].startswith("target flows:") and "touch another" in plan.reasons[0]
    assert "flow components" in plan.format() and "mean squared error of the flows" in plan.format()
    asked = plan_training(cells, machine=CPU, measure=False, target="three_class")
    assert asked.config.data.target == "three_class" and not asked.reasons[0].startswith("target")
    apart = plan_training(write_discs(tmp_path / "discs"), machine=CPU, measure=False)
    assert apart.config.data.target == "semantic" and apart.config.model.num_classes == 1
    assert apart.reasons[0].startswith("target semantic: 0% of the objects touch")


def test_train_target_flag_plans_the_flows_target(tmp_path, capsys):
    cells = write_synthetic_dataset(tmp_path / "cells", 2, size=64, seed=0)
    assert main(["train", str(cells), "--target", "flows", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "target: flows" in out and "num_classes: 3" in out
    assert main(["train", str(cells), "--target", "semantic", "--print-config"]) == 0
    assert "target: semantic" in capsys.readouterr().out
