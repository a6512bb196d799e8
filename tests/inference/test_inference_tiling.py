"""Tiling: exactness of overlap-tile for valid nets, blending without seams for same nets, 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_helpers import tiny_unet

from unetkit.activation import logits_to_probabilities
from unetkit.inference import Predictor
from unetkit.inference.tiling import ArraySource, read_mirrored, reflect_indices
from unetkit.models import UNet


def whole_pass(model, image: np.ndarray) -> np.ndarray:
    """Probabilities of one forward pass over a whole ``(C, *S)`` array."""
    with torch.inference_mode():
        return logits_to_probabilities(model(torch.from_numpy(image)[None]))[0].numpy()


def padded_like_plan(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    """The image mirror-padded exactly as the overlap-tile plan reads it (context before, rest after)."""
    plan, _ = predictor.plan(image.shape[1:])
    pads = [(0, 0)]
    for axis in plan.axes:
        stride = axis.starts[1] - axis.starts[0] if len(axis.starts) > 1 else 0
        total = (len(axis.starts) - 1) * stride + axis.tile_in
        pads.append((axis.offset, total - axis.length - axis.offset))
    return np.pad(image, pads, mode="reflect")


@pytest.mark.parametrize("start,size,length", [(-7, 30, 10), (-25, 80, 9), (3, 4, 10), (-3, 6, 1)])
def test_reflect_indices_match_numpy_pad(start, size, length):
    values = np.arange(length)
    before = max(0, -start)
    after = max(0, start + size - length)
    padded = np.pad(values, (before, after), mode="reflect" if length > 1 else "edge")
    expected = padded[start + before:start + before + size]
    assert np.array_equal(values[reflect_indices(start, size, length)], expected)


def test_read_mirrored_box_equals_padded_image():
    image = np.random.default_rng(0).random((2, 13, 17)).astype(np.float32)
    box = read_mirrored(ArraySource(image), (-5, 9), (20, 14))
    padded = np.pad(image, [(0, 0), (5, 10), (0, 6)], mode="reflect")
    assert np.array_equal(box, padded[:, 0:20, 9:23])


@pytest.mark.parametrize("shape", [(37, 50), (61, 45), (100, 83)])
def test_overlap_tile_equals_one_pass_over_mirror_padded_image(shape):
    model = tiny_unet(1, 2, padding="valid")
    predictor = Predictor(model, tile_size=60, device="cpu", precision="fp32")
    image = np.random.default_rng(1).random((1, *shape), dtype=np.float32)
    plan, _ = predictor.plan(shape)
    assert len(plan) > 1, "the image must need several tiles"
    assert any(axis.length % (axis.starts[1] - axis.starts[0]) for axis in plan.axes)
    tiled = predictor.predict_proba(image)
    whole = whole_pass(model, padded_like_plan(predictor, image))[:, :shape[0], :shape[1]]
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_overlap_tile_stride_follows_the_pooling_grid():
    model = tiny_unet(1, 2, padding="valid", depth=3)
    plan, _ = Predictor(model, tile_size=140, device="cpu", precision="fp32").plan((300, 300))
    for axis in plan.axes:
        assert model.is_valid_input_size(axis.tile_in)
        steps = np.diff(axis.starts)
        assert np.all(steps % 8 == 0) and np.all(steps <= axis.tile_out)
        assert axis.starts[-1] + axis.tile_out >= axis.length


def test_valid_net_constant_image_gives_constant_output():
    """No zero padding anywhere (valid convs, mirrored borders, bilinear up-sampling): a constant
    image must come out constant, across every tile border."""
    torch.manual_seed(0)
    model = UNet(1, 3, depth=2, base_channels=4, padding="valid", up_mode="bilinear").eval()
    predictor = Predictor(model, tile_size=60, device="cpu", precision="fp32")
    probs = predictor.predict_proba(np.full((70, 90), 0.7, np.float32))
    assert np.ptp(probs, axis=(1, 2)).max() < 1e-5


def test_same_net_blending_of_a_constant_prediction_is_constant():
    """A same-padding net whose 3x3 kernels only use their centre maps a constant image to a
    constant: the blended tiles must give back exactly that constant (weights sum to one)."""
    torch.manual_seed(0)
    model = UNet(1, 2, depth=2, base_channels=4, padding="same", up_mode="nearest").eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3):
                centre = module.weight[:, :, 1, 1].clone()
                module.weight.zero_()
                module.weight[:, :, 1, 1] = centre
    image = np.full((1, 75, 90), 0.3, np.float32)
    expected = whole_pass(model, image[:, :64, :64])[:, 0, 0]
    for blend in ("gaussian", "linear", "constant"):
        predictor = Predictor(model, tile_size=32, overlap=0.4, blend=blend, device="cpu", precision="fp32")
        probs = predictor.predict_proba(image)
        np.testing.assert_allclose(probs, np.broadcast_to(expected[:, None, None], probs.shape), atol=1e-6)


def test_gaussian_blending_leaves_no_seam():
    """Tile borders match a whole-image pass (depth-1 net: its receptive field fits in the overlap);
    naive edge-to-edge stitching of the same tiles does not."""
    model = tiny_unet(1, 2, depth=1)
    image = np.random.default_rng(2).random((1, 128, 160), dtype=np.float32)
    whole = whole_pass(model, image)
    blended = Predictor(model, tile_size=64, overlap=0.5, device="cpu", precision="fp32").predict_proba(image)
    naive_predictor = Predictor(model, tile_size=64, overlap=0, blend="constant", device="cpu",
                                precision="fp32")
    naive = naive_predictor.predict_proba(image)
    borders = np.zeros(image.shape[1:], bool)
    borders[:, [63, 64, 127, 128]] = True
    borders[[63, 64], :] = True
    assert np.abs(blended - whole)[:, borders].max() < 2e-3
    assert np.abs(naive - whole)[:, borders].max() > 0.05


def test_3d_valid_tiling_equals_one_pass():
    model = tiny_unet(1, 2, padding="valid", dims=3, depth=1)
    predictor = Predictor(model, tile_size=(20, 24, 24), device="cpu", precision="fp32")
    image = np.random.default_rng(3).random((11, 19, 23), dtype=np.float32)
    plan, _ = predictor.plan(image.shape)
    assert all(len(axis.starts) > 1 for axis in plan.axes)
    probs = predictor.predict_proba(image)
    assert probs.shape == (2, 11, 19, 23)
    whole = whole_pass(model, padded_like_plan(predictor, image[None]))[:, :11, :19, :23]
    np.testing.assert_allclose(probs, whole, atol=1e-5)


def test_3d_same_tiling_shapes_and_agreement():
    model = tiny_unet(2, 3, dims=3, depth=1)
    image = np.random.default_rng(4).random((2, 20, 40, 36), dtype=np.float32)
    tiled = Predictor(model, tile_size=16, overlap=0.5, device="cpu", precision="fp32").predict_proba(image)
    assert tiled.shape == (3, 20, 40, 36)
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)
    assert np.abs(tiled - whole_pass(model, image)).mean() < 0.01
