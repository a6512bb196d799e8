"""The Predictor: input layouts, binary heads, RUN folders, TTA, automatic tiles, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_helpers import make_run, tiny_unet

from unetkit.data.classes import ClassInfo
from unetkit.data.normalize import NormalizeConfig, normalize_image
from unetkit.inference import Predictor
from unetkit.inference.memory import (
    CPU_SLOWDOWN_CHANNEL_VOXELS,
    TILE_EDGES,
    TILE_OVERHEAD_VOXELS,
    auto_tile_and_batch,
    plan_work,
    working_set_bytes,
)
from unetkit.inference.tiling import plan_tiles
from unetkit.inference.tta import symmetries
from unetkit.models import UNet


@pytest.mark.parametrize(
    "dims,in_channels,shape",
    [(2, 1, (30, 41)), (2, 3, (3, 30, 41)), (3, 1, (9, 20, 17)), (3, 2, (2, 9, 20, 17))],
)
def test_layouts_give_probabilities_and_labels(dims, in_channels, shape):
    model = tiny_unet(in_channels, 3, dims=dims, depth=1)
    predictor = Predictor(model, tile_size=16, device="cpu")
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    probs = predictor.predict_proba(image)
    spatial = shape[-dims:]
    assert probs.shape == (3, *spatial) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    labels = predictor.predict(image)
    assert labels.shape == spatial and labels.dtype == np.int64
    assert np.array_equal(labels, probs.argmax(axis=0))


def test_binary_head_gives_background_and_foreground():
    model = tiny_unet(1, 1)
    image = np.random.default_rng(1).random((40, 40), dtype=np.float32)
    predictor = Predictor(model, tile_size=32, device="cpu")
    probs = predictor.predict_proba(image)
    assert probs.shape == (2, 40, 40)
    with torch.inference_mode():
        foreground = torch.sigmoid(model(torch.from_numpy(image)[None, None]))[0, 0].numpy()
    assert np.abs(probs[1] - foreground).mean() < 0.02
    np.testing.assert_allclose(probs[0], 1 - probs[1], atol=1e-6)
    assert np.array_equal(predictor.predict(image), (probs[1] > 0.5).astype(np.int64))


def test_from_run_reads_model_classes_and_normalisation(tmp_path):
    model = tiny_unet(1, 3)
    classes = ClassInfo(["bg", "a", "b"], encoding="palette")
    normalize = NormalizeConfig("zscore")
    run = make_run(tmp_path, model, classes, normalize)
    predictor = Predictor.from_run(run, tile_size=32, device="cpu")
    assert predictor.classes == classes and predictor.normalize == normalize
    raw = np.random.default_rng(2).integers(0, 4000, (1, 48, 40)).astype(np.uint16)
    expected = Predictor(model, tile_size=32, device="cpu").predict_proba(normalize_image(raw, normalize))
    np.testing.assert_allclose(predictor.predict_proba(raw), expected, atol=1e-6)
    assert Predictor(run, tile_size=32, device="cpu").classes == classes


def test_from_run_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="RUN folder"):
        Predictor.from_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.json"):
        Predictor.from_run(tmp_path / "empty")


def test_wrong_channels_and_shapes_say_what_the_model_expects():
    predictor = Predictor(tiny_unet(3, 2), device="cpu")
    with pytest.raises(ValueError, match="expects 3.*--channels rgb"):
        predictor.predict(np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        predictor.predict(np.zeros((1, 3, 32, 32), np.float32))


def symmetric_image(size: int) -> np.ndarray:
    """An image equal to its flips and transposes."""
    a = np.random.default_rng(5).random((size, size), dtype=np.float32)
    a = a + a[::-1] + a[:, ::-1] + a[::-1, ::-1]
    return (a + a.T) / 8


def test_tta_output_is_symmetric_for_a_symmetric_input():
    model = tiny_unet(1, 3)
    image = symmetric_image(32)
    plain = Predictor(model, tile_size=32, device="cpu").predict_proba(image)
    tta = Predictor(model, tile_size=32, tta=True, device="cpu").predict_proba(image)
    assert np.abs(plain - plain[:, ::-1]).max() > 1e-3, "a random net is not symmetric by itself"
    for view in (tta[:, ::-1], tta[:, :, ::-1], tta.transpose(0, 2, 1)):
        np.testing.assert_allclose(tta, view, atol=1e-5)


def test_tta_transforms_invert_and_cover_the_group():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    views = {tuple(s.apply(x).flatten().tolist()) for s in symmetries(2)}
    assert len(views) == 8
    for s in symmetries(3):
        v = torch.rand(1, 2, 3, 4, 4)
        assert torch.equal(s.invert(s.apply(v)), v)
    assert len(symmetries(3)) == 16


def test_automatic_tile_and_batch_fit_the_network_and_the_memory_budget():
    model = tiny_unet(1, 2, padding="valid", depth=2)
    cpu = torch.device("cpu")
    tile, batch = auto_tile_and_batch(model, (3000, 3000), cpu)
    assert batch == 1 and model.is_valid_input_size(tile)  # one tile at a time on the CPU
    sizes = {}
    for budget in (2**30, 256 * 2**20, 128 * 2**20):
        tile, _ = auto_tile_and_batch(model, (3000, 3000), cpu, max_memory=budget)
        plan = plan_tiles(model, (3000, 3000), tile, 0.25)
        assert working_set_bytes(model, (3000, 3000), plan.tile_in, plan.tile_out, 1, 2) <= budget
        sizes[budget] = tile[0]
    assert sizes[2**30] > sizes[256 * 2**20] > sizes[128 * 2**20]
    predictor = Predictor(model, device="cpu")
    plan, _ = predictor.plan((300, 200))
    assert all(model.is_valid_input_size(a.tile_in) for a in plan.axes)
    probs = predictor.predict_proba(np.random.default_rng(0).random((300, 200), dtype=np.float32))
    assert probs.shape == (2, 300, 200)
    with pytest.raises(ValueError, match="max_memory must be a positive"):
        Predictor(model, max_memory=0)


@pytest.mark.parametrize("channels", [4, 64])
@pytest.mark.parametrize("size", [700, 1500, 2048, 5000])
def test_the_automatic_tile_has_the_least_modelled_work(size, channels):
    model = UNet(1, 2, depth=2, base_channels=channels, padding="same")
    cpu = torch.device("cpu")
    tile, _ = auto_tile_and_batch(model, (size, size), cpu, max_memory=2**40)
    work = {}
    for edge in TILE_EDGES[2]:
        plan = plan_tiles(model, (size, size), (edge, edge), 0.25)
        work[plan.tile_in] = plan_work(model, plan, cpu)
    assert work[tile] == min(work.values())


def test_the_work_of_a_plan_counts_voxels_slowdown_and_calls():
    """Wide networks run slower per voxel on big CPU tiles; every tile costs a call."""
    narrow, wide = (UNet(1, 2, depth=2, base_channels=c, padding="same") for c in (16, 64))
    plan = plan_tiles(narrow, (2000, 2000), (1024, 1024), 0.25)  # 3 x 3 tiles
    voxels = 1024 * 1024
    for model in (narrow, wide):
        slowdown = 1 + model.config.base_channels * voxels / CPU_SLOWDOWN_CHANNEL_VOXELS
        expected = 9 * (voxels * slowdown + TILE_OVERHEAD_VOXELS[2])
        assert plan_work(model, plan, torch.device("cpu")) == pytest.approx(expected)
    assert plan_work(wide, plan, torch.device("cuda")) == 9 * (voxels + TILE_OVERHEAD_VOXELS[2])
    cpu = torch.device("cpu")
    (narrow_tile, _), (wide_tile, _) = (auto_tile_and_batch(m, (2048, 2048), cpu, max_memory=2**40)
                                        for m in (narrow, wide))
    assert wide_tile < narrow_tile


def test_a_training_model_is_predicted_in_eval_mode_and_left_training():
    torch.manual_seed(0)
    model = UNet(1, 2, depth=1, base_channels=4, padding="same", norm="batch", dropout=0.5)
    image = np.random.default_rng(6).random((24, 24), dtype=np.float32)
    predictor = Predictor(model, tile_size=24)
    model.train()
    first, second = predictor.predict_proba(image), predictor.predict_proba(image)
    assert model.training
    np.testing.assert_array_equal(first, second)
    model.eval()
    np.testing.assert_array_equal(predictor.predict_proba(image), first)
