"""The distance target: the normalised distance to each object's outline, and objects back from it."""

from __future__ import annotations

import numpy as np
import pytest
from object_helpers import augmented_map_patch, ball, train_tiny_run, two_touching

from unetkit.data.flows import flows_from_instances
from unetkit.data.instances import distance_from_instances, map_channels
from unetkit.data.synthetic import make_synthetic_cells
from unetkit.instances import (
    InstanceConfig,
    default_instance_method,
    instances_from_distance,
    instances_from_probabilities,
)

DISTANCE = InstanceConfig(method="distance")


@pytest.mark.parametrize("dims", [2, 3])
def test_distance_of_a_ball_is_one_at_its_centre_and_falls_to_its_outline(dims):
    shape = (31, 31, 31)[-dims:]
    labels = ball(shape, (15,) * dims, 9).astype(np.int32)
    distance = distance_from_instances(labels)
    assert distance.shape == (1, *shape) and distance.dtype == np.float32
    assert distance[(0,) + (15,) * dims] == pytest.approx(1.0)
    assert distance.max() == pytest.approx(1.0) and np.all(distance[0][labels == 0] == 0)
    line = distance[(0,) + (15,) * (dims - 1)]  # along the last axis through the centre
    inside = line[6:16]
    assert np.all(np.diff(inside) > 0) and 0 < line[6] <= 0.15


def test_each_of_two_touching_objects_has_its_own_peak_of_any_size():
    labels = two_touching()
    labels[ball(labels.shape, (10, 10), 4)] = 3
    distance = distance_from_instances(labels)[0]
    for obj in (1, 2, 3):
        assert distance[labels == obj].max() == pytest.approx(1.0)
    contact = (labels == 1) & np.roll(labels == 2, -1, axis=1)
    assert contact.any() and np.all(distance[contact] == 0)


def test_the_distance_route_separates_touching_objects_that_a_threshold_joins():
    labels = two_touching()
    foreground = (labels > 0).astype(np.float32)
    distance = distance_from_instances(labels)[0]
    found = instances_from_distance(foreground, distance, DISTANCE)
    assert found.dtype == np.uint32 and found.max() == 2
    for obj in (1, 2):
        ids, counts = np.unique(found[labels == obj], return_counts=True)
        assert counts.max() / counts.sum() > 0.95 and ids[counts.argmax()] > 0
    blob = ball((40, 40), (20, 20), 5).astype(np.float32)
    alone = instances_from_distance(blob, np.zeros_like(blob), DISTANCE)
    assert alone.max() == 1 and np.array_equal(alone > 0, blob > 0)  # no core: still one object
    with pytest.raises(ValueError, match="does not match"):
        instances_from_distance(foreground, distance[:10], DISTANCE)


@pytest.mark.parametrize("target", ["flows", "distance"])
def test_the_dispatch_routes_a_flows_or_distance_network_and_refuses_others(target):
    labels = two_touching()
    foreground = (labels > 0).astype(np.float32)
    maps = flows_from_instances(labels) if target == "flows" else distance_from_instances(labels)
    outputs = np.concatenate([np.stack([1 - foreground, foreground]), maps])
    assert map_channels(target, 2) == len(maps) and map_channels("flows", 3) == 3
    assert default_instance_method(target, ["background", "foreground"]) == target
    own = InstanceConfig(method=target)
    assert instances_from_probabilities(outputs, own, target).max() == 2
    assert instances_from_probabilities(outputs, InstanceConfig(method="components"), target).max() == 1
    other = "distance" if target == "flows" else "flows"
    for wrong_target, given in ((other, outputs), ("semantic", outputs), ("semantic", outputs[:2])):
        with pytest.raises(ValueError, match=f"--target {target}"):
            instances_from_probabilities(given, own, wrong_target)


def test_patch_dataset_gives_the_distance_of_the_augmented_objects(tmp_path):
    maps, mask = augmented_map_patch(tmp_path, "distance", distance_from_instances)
    distance = maps[0]
    assert np.all(distance[mask == 0] == 0) and 0 <= distance.min() and distance.max() <= 1.0


def test_train_a_distance_network_then_predict_and_export_its_objects(tmp_path):
    from unetkit.cli import main
    from unetkit.export import build_contract
    from unetkit.inference import Predictor

    run = train_tiny_run(tmp_path, "distance")
    predictor = Predictor(run)
    assert predictor.target == "distance" and predictor.model.config.num_classes == 2
    image = make_synthetic_cells(48, seed=5).image
    outputs = predictor.predict_proba(image)
    assert outputs.shape == (3, 48, 48) and predictor.proba_channels == 3
    assert np.allclose(outputs[:2].sum(axis=0), 1.0, atol=1e-5)
    tta = Predictor(run, tta=True).predict_proba(image)
    assert tta.shape == (3, 48, 48)
    labels = predictor.predict(image)
    assert set(np.unique(labels)) <= {0, 1}
    contract = build_contract(predictor.model, predictor.classes, predictor.normalize, target="distance")
    assert contract["output"]["kind"] == "logits and distance"

    import tifffile

    out = tmp_path / "out"
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, np.squeeze(image))
    assert main(["predict", str(run), str(source), "--out", str(out), "--instances", "--min-size", "1"]) == 0
    assert (out / "in_instances.tif").exists()
