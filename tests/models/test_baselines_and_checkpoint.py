"""Baselines, config round trips and safe model files."""

from __future__ import annotations

import json

import pytest
import torch

from unetkit.checkpoint import load_model, save_model
from unetkit.models import EncoderDecoder, ModelConfig, PlainFCN, UNet, build_model


@pytest.mark.parametrize("up_mode", ("nearest", "unpool", "transpose"))
@pytest.mark.parametrize("dims", (2, 3))
def test_encoder_decoder_has_no_skips(up_mode, dims):
    kwargs = dict(dims=dims, depth=2, base_channels=4, padding="same", up_mode=up_mode)
    no_skip = EncoderDecoder(1, 2, **kwargs)
    with_skip = UNet(1, 2, **kwargs)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(no_skip) < count(with_skip)
    shape = (16, 8) if dims == 2 else (8, 16, 8)
    assert no_skip(torch.randn(2, 1, *shape)).shape == (2, 2, *shape)
    assert no_skip.config.architecture == "encoder_decoder"


def test_encoder_decoder_ignores_the_skip_input():
    model = EncoderDecoder(1, 2, depth=2, base_channels=4).eval()
    up = model.ups[0]
    x = torch.randn(1, 16, 4, 4)
    a = up(x, torch.zeros(1, 8, 8, 8), torch.empty(0, dtype=torch.long))
    b = up(x, torch.randn(1, 8, 8, 8), torch.empty(0, dtype=torch.long))
    assert torch.equal(a, b)


@pytest.mark.parametrize("padding", ("same", "valid"))
@pytest.mark.parametrize("dims", (2, 3))
def test_plain_fcn_shapes(padding, dims):
    model = PlainFCN(2, 4, dims=dims, base_channels=4, num_layers=3, padding=padding)
    shape = (13, 17) if dims == 2 else (9, 13, 11)
    out = model(torch.randn(2, 2, *shape))
    assert out.shape[2:] == model.output_size(shape)
    assert out.shape[:2] == (2, 4)
    if padding == "valid":
        assert model.context() == 3
        with pytest.raises(ValueError, match="nearest valid sizes"):
            model.output_size(6)


@pytest.mark.parametrize(
    "model",
    [
        UNet(3, 4, depth=2, base_channels=4, padding="same", up_mode="bilinear", norm="group",
             dropout=(0.1, 0.2, 0.3)),
        UNet(1, 2, dims=3, depth=1, base_channels=2, up_mode="unpool"),
        EncoderDecoder(1, 1, depth=2, base_channels=4, up_mode="unpool"),
        PlainFCN(1, 3, base_channels=4, num_layers=2),
    ],
)
def test_config_rebuilds_the_model_and_files_round_trip(model, tmp_path):
    config = ModelConfig.from_dict(json.loads(json.dumps(model.config.to_dict())))
    assert config == model.config
    rebuilt = build_model(config)
    assert type(rebuilt) is type(model)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    model.eval()
    shape = (1, model.config.in_channels) + ((8, 8, 8) if model.config.dims == 3 else (16, 16))
    if model.config.padding == "valid" and model.config.architecture != "plain_fcn":
        shape = shape[:2] + (model.input_size_for(1),) * model.config.dims
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert not list((tmp_path / "m").glob(".*part*"))


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_model(tmp_path)
    model = UNet(1, 2, depth=1, base_channels=2)
    save_model(model, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_model(tmp_path)
    save_model(model, tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({**model.config.to_dict(), "base_channels": 4}))
    with pytest.raises(ValueError, match="does not match"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"depht": 3}))
    with pytest.raises(ValueError, match="unknown model config fields"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="architecture"):
        build_model(ModelConfig(architecture="resnet"))
