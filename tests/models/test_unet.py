"""The U-Net family: shapes, the paper's numbers, size arithmetic, unpooling, gradients, TorchScript."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from unetkit.models import UNet
from unetkit.models.blocks import UP_MODES, crop_pool_indices, max_unpool
from unetkit.models.unet import per_level_dropout


def small_unet(dims: int, padding: str, up_mode: str, **kwargs) -> UNet:
    return UNet(2, 3, dims=dims, depth=2, base_channels=4, padding=padding, up_mode=up_mode, **kwargs)


def input_shape(dims: int, padding: str) -> tuple[int, ...]:
    """A non-square (non-cubic) valid input for a depth-2 net."""
    if padding == "valid":
        return (44, 60) if dims == 2 else (44, 44, 52)
    return (16, 24) if dims == 2 else (8, 16, 12)


@pytest.mark.parametrize(
    "dims,padding,up_mode,batch",
    list(itertools.product((2, 3), ("valid", "same"), UP_MODES, (1, 3))),
)
def test_output_shape_every_combination(dims, padding, up_mode, batch):
    model = small_unet(dims, padding, up_mode)
    shape = input_shape(dims, padding)
    out = model(torch.randn(batch, 2, *shape))
    expected = model.output_size(shape)
    assert out.shape == (batch, 3, *expected)
    if padding == "same":
        assert expected == shape
    else:
        assert all(o == s - 2 * model.context() for o, s in zip(expected, shape))


def test_paper_preset_matches_the_paper():
    model = UNet.paper()
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 23
    assert sum(p.numel() for p in model.parameters()) == 31_030_658
    assert model.output_size(572) == 388
    assert model.input_size_for(388) == 572
    assert model.context() == 92
    with torch.inference_mode():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_tutorial_preset():
    model = UNet.tutorial()
    assert model.config.in_channels == 3 and model.config.num_classes == 1
    assert model.config.dropout == (0.1, 0.1, 0.2, 0.2, 0.3)
    assert model.inc.block[0].out_channels == 16
    assert model.downs[-1].conv.block[0].out_channels == 256
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert sorted(rates) == sorted([0.1, 0.1, 0.2, 0.2, 0.3, 0.2, 0.2, 0.1, 0.1])
    model.eval()
    with torch.inference_mode():
        assert model(torch.rand(2, 3, 128, 128)).shape == (2, 1, 128, 128)


def test_max_unpooling_hand_worked_example():
    x = torch.tensor(
        [[[[1.0, 5.0, 2.0, 0.0],
           [3.0, 4.0, 8.0, 1.0],
           [9.0, 0.0, 1.0, 1.0],
           [2.0, 6.0, 7.0, 3.0]]]]
    )
    pooled, indices = nn.functional.max_pool2d(x, 2, 2, return_indices=True)
    assert pooled.tolist() == [[[[5.0, 8.0], [9.0, 7.0]]]]
    restored = max_unpool(pooled, indices)
    assert torch.equal(restored, nn.functional.max_unpool2d(pooled, indices, 2, 2))
    expected = torch.tensor(
        [[[[0.0, 5.0, 0.0, 0.0],
           [0.0, 0.0, 8.0, 0.0],
           [9.0, 0.0, 0.0, 0.0],
           [0.0, 0.0, 7.0, 0.0]]]]
    )
    assert torch.equal(restored, expected)


@pytest.mark.parametrize("dims", (2, 3))
def test_cropped_pool_indices_point_to_the_same_maxima(dims):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *([12] * dims))
    pool = nn.functional.max_pool2d if dims == 2 else nn.functional.max_pool3d
    unpool = nn.functional.max_unpool2d if dims == 2 else nn.functional.max_unpool3d
    pooled, indices = pool(x, 2, 2, return_indices=True)
    full = unpool(pooled, indices, 2, 2, output_size=[12] * dims)
    assert torch.equal(max_unpool(pooled, indices), full)
    target = [2] * dims  # crop 6 -> 2: offset 2 in the pooled grid, 4 in the plane
    crop = (slice(None), slice(None)) + (slice(2, 4),) * dims
    cropped = unpool(pooled[crop], crop_pool_indices(indices, target), 2, 2, output_size=[4] * dims)
    plane_crop = (slice(None), slice(None)) + (slice(4, 8),) * dims
    assert torch.equal(cropped, full[plane_crop])


def test_unpool_mode_puts_decoder_values_at_encoder_maxima():
    model = small_unet(2, "same", "unpool")
    up = model.ups[-1]
    captured = {}
    up.register_forward_hook(lambda m, inp, out: captured.update(indices=inp[2]))
    model(torch.randn(1, 2, 16, 16))
    indices = captured["indices"]
    assert indices.shape == (1, 4, 8, 8)
    assert int(indices.max()) < 16 * 16


@pytest.mark.parametrize(
    "model,size,nearest",
    [
        (UNet.paper(), 570, ("556", "572")),
        (UNet.paper(), 100, ("188",)),
        (UNet(1, 2, padding="same", depth=4, base_channels=4), 100, ("96", "112")),
    ],
)
def test_invalid_sizes_name_the_nearest_valid_sizes(model, size, nearest):
    with pytest.raises(ValueError) as info:
        model.output_size(size)
    for text in nearest:
        assert text in str(info.value)
    with pytest.raises(ValueError, match="nearest valid sizes"):
        model(torch.zeros(1, 1, size, size))


def test_valid_sizes_arithmetic_is_consistent():
    model = UNet(1, 2, depth=3, base_channels=4)
    sizes = model.valid_input_sizes(1, 300)
    assert sizes and all(b - a == 8 for a, b in zip(sizes, sizes[1:]))
    for s in sizes[:5]:
        assert model.input_size_for(model.output_size(s)) == s
    pair = (sizes[0], sizes[1])
    assert model.output_size(pair) == (model.output_size(sizes[0]), model.output_size(sizes[1]))
    assert not model.is_valid_input_size(sizes[0] + 1)


def test_wrong_channels_and_rank_are_rejected():
    model = small_unet(2, "same", "transpose")
    with pytest.raises(ValueError, match="input channels"):
        model(torch.zeros(1, 5, 16, 16))
    with pytest.raises(ValueError, match="4D tensor"):
        model(torch.zeros(2, 16, 16))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="padding"):
        UNet(1, 2, padding="reflect")
    with pytest.raises(ValueError, match="up_mode"):
        UNet(1, 2, up_mode="pixelshuffle")
    with pytest.raises(ValueError, match="norm"):
        UNet(1, 2, norm="layer")
    with pytest.raises(ValueError, match="dims"):
        UNet(1, 2, dims=4)
    with pytest.raises(ValueError, match="one rate per level"):
        per_level_dropout((0.1, 0.2), depth=4)


@pytest.mark.parametrize("up_mode", UP_MODES)
@pytest.mark.parametrize("norm", (None, "batch", "instance", "group"))
def test_gradients_reach_every_parameter(up_mode, norm):
    torch.manual_seed(0)
    model = small_unet(2, "same", up_mode, norm=norm)
    model(torch.randn(2, 2, 16, 16)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("up_mode", UP_MODES)
@pytest.mark.parametrize("dims", (2, 3))
def test_torchscript_script_and_trace(up_mode, dims):
    model = small_unet(dims, "valid", up_mode).eval()
    x = torch.randn(1, 2, *input_shape(dims, "valid"))
    with torch.no_grad():
        expected = model(x)
        scripted = torch.jit.script(model)
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(scripted(x), expected)
        torch.testing.assert_close(traced(x), expected)


@pytest.mark.parametrize("space_to_depth", [1, 2])
def test_residual_network_starts_as_the_identity_and_keeps_its_shape(space_to_depth):
    net = UNet(3, 3, depth=2, base_channels=4, padding="same", residual=True, space_to_depth=space_to_depth)
    x = torch.randn(2, 3, 16 * space_to_depth, 24 * space_to_depth)
    assert torch.equal(net.eval()(x), x)  # the zero-initialised head: no correction yet
    nn.init.normal_(net.head.weight)
    assert net(x).shape == x.shape and not torch.equal(net(x), x)


def test_valid_padding_residual_adds_the_centre_of_the_input():
    net = UNet(1, 1, depth=2, base_channels=4, padding="valid", residual=True).eval()
    x = torch.randn(1, 1, 44, 44)
    out = net(x)
    crop = (44 - out.shape[-1]) // 2
    assert torch.equal(out, x[..., crop:crop + out.shape[-2], crop:crop + out.shape[-1]])


def test_space_to_depth_runs_the_net_at_half_resolution():
    net = UNet(1, 1, depth=2, base_channels=4, padding="same", residual=True, space_to_depth=2)
    assert net.inc.block[0].in_channels == 4 and net.head.out_channels == 4
    assert net.is_valid_input_size((16, 24)) and not net.is_valid_input_size((12, 24))  # multiples of 8
    assert net.axis_min_input() == 8
    scripted = torch.jit.script(net.eval())
    x = torch.randn(1, 1, 32, 40)
    assert torch.allclose(scripted(x), net(x))


def test_residual_and_space_to_depth_are_refused_where_they_cannot_work():
    with pytest.raises(ValueError, match="as many channels"):
        UNet(1, 2, padding="same", residual=True)
    with pytest.raises(ValueError, match="space_to_depth"):
        UNet(1, 1, padding="valid", space_to_depth=2)
    with pytest.raises(ValueError, match="space_to_depth"):
        UNet(1, 1, dims=3, padding="same", space_to_depth=2)
