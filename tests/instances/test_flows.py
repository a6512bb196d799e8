"""The flows target: flow fields from instance labels, and objects back from (predicted) flows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from object_helpers import augmented_map_patch, ball, train_tiny_run, two_touching

from unetkit.activation import MAP_SCALE, foreground_and_maps
from unetkit.data.flows import flows_from_instances, object_centres
from unetkit.data.synthetic import make_synthetic_cells
from unetkit.flows import flow_errors, follow_flows, instances_from_flows
from unetkit.inference.tta import symmetries
from unetkit.instance_metrics import instance_scores
from unetkit.instances import InstanceConfig, default_instance_method, instances_from_probabilities
from unetkit.losses import ForegroundMapLoss, LossConfig

FLOWS = InstanceConfig(method="flows")


def towards(labels_shape, centre):
    """Unit vectors ``(D, *S)`` from every pixel towards ``centre`` and their lengths."""
    offset = np.array(centre).reshape((-1,) + (1,) * len(labels_shape)) - np.indices(labels_shape)
    length = np.sqrt((offset**2).sum(axis=0))
    return offset / np.maximum(length, 1e-9), length


def test_flows_of_a_disc_point_to_its_centre_and_following_them_returns_the_disc():
    disc = ball((41, 41), (20, 20), 12).astype(np.int32)
    flows = flows_from_instances(disc)
    assert flows.shape == (2, 41, 41) and flows.dtype == np.float32
    assert np.all(flows[:, disc == 0] == 0)
    ids, centres = object_centres(disc)
    assert ids.tolist() == [1] and centres.tolist() == [[20, 20]]
    direction, length = towards(disc.shape, (20, 20))
    away = (disc > 0) & (length > 0)
    cosine = (flows * direction).sum(axis=0)[away]
    assert cosine.min() > 0.95 and np.allclose(np.sqrt((flows**2).sum(axis=0))[away], 1.0, atol=1e-5)
    ends = follow_flows(flows, disc > 0)
    assert np.abs(ends - np.array([[20], [20]])).max() <= 1.5  # every pixel arrives at the centre
    found = instances_from_flows(disc.astype(np.float32), flows, FLOWS)
    assert found.dtype == np.uint32 and found.max() == 1 and np.array_equal(found > 0, disc > 0)


def test_two_touching_discs_come_back_as_two_objects():
    labels = two_touching()
    flows = flows_from_instances(labels)
    # No heat leaks across the contact: each side of it flows to its own centre.
    contact = (labels == 1) & np.roll(labels == 2, -1, axis=1)
    assert contact.any() and np.all(flows[1][contact] < 0)
    probability = (labels > 0).astype(np.float32)
    found = instances_from_flows(probability, flows, FLOWS)
    assert found.max() == 2
    scores = instance_scores(labels, found)
    assert scores.ap_50 == 1.0 and scores.aji > 0.95
    # The foreground alone merges them: the flows are what keeps them apart.
    assert instances_from_flows(probability, np.zeros_like(flows), FLOWS).max() <= 1


def test_touching_balls_in_3d():
    labels = two_touching((24, 24, 36), ((12, 12, 11), (12, 12, 24)), 7)
    flows = flows_from_instances(labels)
    assert flows.shape == (3, *labels.shape)
    direction, length = towards(labels.shape, (12, 12, 11))
    away = (labels == 1) & (length > 1)
    assert np.median((flows * direction).sum(axis=0)[away]) > 0.95
    found = instances_from_flows((labels > 0).astype(np.float32), flows, FLOWS)
    assert found.max() == 2 and instance_scores(labels, found).ap_50 == 1.0


def test_crowded_synthetic_cells_come_back_from_their_flows():
    cells = make_synthetic_cells(128, seed=3)
    flows = flows_from_instances(cells.instances)
    probability = cells.semantic.astype(np.float32)
    noisy = flows + np.random.default_rng(0).normal(scale=0.3, size=flows.shape).astype(np.float32)
    for field in (flows, noisy):
        scores = instance_scores(cells.instances, instances_from_flows(probability, field, FLOWS))
        assert scores.ap_50 > 0.8, scores
    # The distance watershed on the same perfect foreground does worse on these crowded cells.
    watershed = instances_from_probabilities(np.stack([1 - probability, probability]), InstanceConfig())
    assert instance_scores(cells.instances, watershed).ap_50 < 0.8


def test_flow_check_drops_objects_whose_flows_do_not_fit_their_shape():
    labels = two_touching()
    flows = flows_from_instances(labels)
    errors = flow_errors(labels, flows)
    assert errors.shape == (3,) and errors[1:].max() < 1e-6
    # Object 2's flows lead to a point on its rim: its pixels still arrive together, but the shape
    # they make would flow to its middle.
    direction, _ = towards(labels.shape, (32, 49))
    flows[:, labels == 2] = direction[:, labels == 2]
    assert flow_errors(labels, flows)[2] > 0.4
    mask = (labels > 0).astype(np.float32)
    everything = instances_from_flows(mask, flows, FLOWS)
    kept = instances_from_flows(mask, flows, InstanceConfig(method="flows", flow_threshold=0.4))
    assert everything.max() == 2 and kept.max() == 1 and np.array_equal(kept > 0, labels == 1)
    with pytest.raises(ValueError, match="one component per axis"):
        instances_from_flows(mask, flows[:1], FLOWS)


def test_flows_head_activation_and_loss():
    logits = torch.randn(1, 3, 16, 16, requires_grad=True)
    out = foreground_and_maps(logits)
    assert out.shape == (1, 4, 16, 16)
    assert torch.allclose(out[:, :2].sum(dim=1), torch.ones(1, 16, 16))
    assert torch.allclose(out[:, 2:], logits[:, 1:] / MAP_SCALE)

    labels = two_touching((16, 16), ((8, 4), (8, 11)), 4)
    flows = torch.from_numpy(flows_from_instances(labels))[None]
    mask = torch.from_numpy(labels > 0).long()[None]
    loss = ForegroundMapLoss(LossConfig(name="ce_dice"))
    perfect = torch.cat([(mask[:, None].float() * 2 - 1) * 20, MAP_SCALE * flows], dim=1)
    wrong = torch.cat([perfect[:, :1], -perfect[:, 1:]], dim=1)
    assert loss(perfect, mask, flows) < 0.05 < loss(wrong, mask, flows)
    ignored = ForegroundMapLoss(LossConfig(name="ce"), ignore_index=9)
    assert ignored(wrong, torch.full_like(mask, 9), flows) == 0  # nothing scored
    loss(logits, mask, flows).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="do not match"):
        loss(perfect, mask, flows[:, :1])


@pytest.mark.parametrize("dims", [2, 3])
def test_test_time_augmentation_turns_flow_vectors_back(dims):
    shape = (12, 20, 20)[-dims:]
    labels = ball(shape, (5, 8, 11)[-dims:], 4).astype(np.int32)
    expected = flows_from_instances(labels)
    for sym in symmetries(dims):
        moved = sym.apply(torch.from_numpy(labels)[None, None])[0, 0].numpy()
        seen = torch.from_numpy(flows_from_instances(moved))[None]
        padded = torch.cat([torch.zeros(1, 2, *seen.shape[2:]), seen], dim=1)
        back = sym.invert(padded, vectors=2)[0, 2:].numpy()
        assert np.allclose(back, expected, atol=1e-4), sym


def test_patch_dataset_gives_the_flows_of_the_augmented_objects(tmp_path):
    flows, mask = augmented_map_patch(tmp_path, "flows", flows_from_instances)
    assert np.all(flows[:, mask == 0] == 0)
    length = np.sqrt((flows**2).sum(axis=0))[mask == 1]
    assert np.mean(np.isclose(length, 1.0, atol=1e-4)) > 0.9


def test_predictor_of_a_flows_network_gives_foreground_then_flows():
    from unetkit.data.scale import predict_at_object_scale
    from unetkit.inference import Predictor
    from unetkit.models import UNet

    torch.manual_seed(0)
    model = UNet(1, 3, dims=2, depth=2, base_channels=4).eval()
    image = np.random.default_rng(0).random((1, 40, 48), dtype=np.float32)
    for tta in (False, True):
        predictor = Predictor(model, target="flows", device="cpu", tta=tta)
        out = predictor.predict_proba(image)
        assert out.shape == (4, 40, 48) and predictor.proba_channels == 4 and predictor.num_classes == 2
        assert np.allclose(out[:2].sum(axis=0), 1.0, atol=1e-5) and (out[2:] < 0).any()
        assert np.array_equal(predictor.labels(out), (out[1] > 0.5).astype(np.int64))
    # At an object scale only the probabilities are renormalised; the flows are resized as they are.
    discs = ball((48, 48), (24, 12), 4) | ball((48, 48), (24, 36), 4)

    def predict(array: np.ndarray) -> np.ndarray:
        foreground = (array[0] > 0.5).astype(np.float32)
        flows = np.stack([-np.ones_like(foreground), np.full_like(foreground, 0.5)])
        return np.concatenate([np.stack([1 - foreground, foreground]), flows])

    out = predict_at_object_scale(predict, discs[None].astype(np.float32), 24.0, classes=2)
    assert out.shape == (4, 48, 48) and np.allclose(out[2], -1.0) and np.allclose(out[3], 0.5)


def test_an_exported_flows_network_predicts_as_the_run(tmp_path):
    from unetkit.export import export_model, predictor_for, read_contract
    from unetkit.inference import Predictor
    from unetkit.models import UNet

    torch.manual_seed(0)
    model = UNet(1, 3, dims=2, depth=2, base_channels=4).eval()
    out = export_model(model, tmp_path / "flows.pt", "torchscript", target="flows")
    assert read_contract(out)["output"]["labels"] == "foreground where sigmoid(channel 0) > 0.5"
    exported = predictor_for(out, "torchscript", device="cpu")
    assert exported.target == "flows"
    image = np.random.default_rng(1).random((40, 36), dtype=np.float32)
    expected = Predictor(model, target="flows", device="cpu", precision="fp32").predict_proba(image)
    np.testing.assert_allclose(exported.predict_proba(image), expected, atol=1e-4)


def test_train_a_flows_network_and_get_its_objects(tmp_path):
    from unetkit.inference import Predictor

    run = train_tiny_run(tmp_path, "flows")
    predictor = Predictor(run)
    assert predictor.target == "flows" and predictor.model.config.num_classes == 3
    outputs = predictor.predict_proba(make_synthetic_cells(48, seed=5).image)
    assert outputs.shape == (4, 48, 48)
    method = default_instance_method(predictor.target, predictor.classes.names)
    config = InstanceConfig(method=method, min_size=1)
    labels = instances_from_probabilities(outputs, config, predictor.target)
    assert labels.shape == (48, 48) and labels.dtype == np.uint32
