"""Baselines, config round trips and safe model files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit import checkpoint
from unetkit.checkpoint import ModelLoadError, load_model, save_model
from unetkit.cli import main
from unetkit.models import EncoderDecoder, ModelConfig, PlainFCN, UNet, build_model, model_config_from_dict


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
    with pytest.raises(ValueError, match="base_channels"):  # training cannot write what loading refuses
        build_model(ModelConfig(base_channels=2048))


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"base_channels": 2048}, "base_channels"),
        ({"depth": 40}, "depth"),
        ({"in_channels": -1}, "in_channels"),
        ({"num_classes": 0}, "num_classes"),
        ({"dims": 4}, "dims"),
        ({"base_channels": "64"}, "base_channels"),
        ({"base_channels": 64.5}, "base_channels"),
        ({"num_layers": 10**6}, "num_layers"),
        ({"space_to_depth": True}, "space_to_depth"),
        ({"dropout": 2.0}, "dropout"),
        ({"dropout": [0.1] * 50}, "dropout"),
        ({"architecture": "resnet"}, "architecture"),
        ({"residual": "yes"}, "residual"),
        ({"architecture": "diffusion_unet", "base_channels": 2048}, "base_channels"),
        ({"architecture": "diffusion_unet", "channel_mults": [1] * 40}, "channel_mults"),
        ({"architecture": "diffusion_unet", "channel_mults": [1, 1000]}, "channel_mults"),
        ({"architecture": "diffusion_unet", "num_res_blocks": 500}, "num_res_blocks"),
        ({"architecture": "diffusion_unet", "attention_levels": [7]}, "attention_levels"),
        ({"architecture": "diffusion_unet", "num_classes": 10**9}, "num_classes"),
        ({"architecture": "diffusion_unet", "cond_dim": -3}, "cond_dim"),
        ({"architecture": "diffusion_unet", "groups": 0}, "groups"),
        ({"architecture": "diffusion_unet", "dropout": -0.5}, "dropout"),
    ],
)
def test_model_config_files_are_bounded(fields, named):
    with pytest.raises(ValueError, match=named):
        model_config_from_dict(fields)


def test_model_config_must_be_a_mapping():
    with pytest.raises(ValueError, match="mapping"):
        model_config_from_dict([1, 2])


def test_loading_builds_on_the_meta_device_and_checks_shapes_before_allocating(tmp_path, monkeypatch):
    save_model(UNet(1, 1, depth=1, base_channels=2, padding="same"), tmp_path)
    big = {**json.loads((tmp_path / "model.json").read_text()), "base_channels": 512}
    (tmp_path / "model.json").write_text(json.dumps(big))
    devices = []
    kaiming = torch.nn.init.kaiming_uniform_

    def spy(tensor, *args, **kwargs):
        devices.append(tensor.device.type)
        return kaiming(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", spy)
    with pytest.raises(ModelLoadError, match="model.safetensors does not match") as error:
        load_model(tmp_path)
    assert "model.json" in str(error.value)
    assert devices and set(devices) == {"meta"}  # nothing was allocated or initialised
    save_model(UNet(1, 1, depth=1, base_channels=2, padding="same"), tmp_path)
    loaded = load_model(tmp_path)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert all(b.device.type == "cpu" for b in loaded.buffers())


def test_a_save_killed_between_the_weights_and_model_json_is_caught_on_load(tmp_path, monkeypatch):
    save_model(UNet(1, 1, depth=1, base_channels=2, padding="same"), tmp_path)

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(checkpoint, "atomic_write_json", killed)
    newer = UNet(1, 1, depth=1, base_channels=2, padding="valid")  # the same tensors, another network
    with pytest.raises(RuntimeError, match="killed"):
        save_model(newer, tmp_path)  # wrote model.safetensors only
    monkeypatch.undo()
    with pytest.raises(ModelLoadError, match="different") as error:
        load_model(tmp_path)
    assert "model.json" in str(error.value) and "model.safetensors" in str(error.value)
    save_model(newer, tmp_path)
    assert load_model(tmp_path).config.padding == "valid"


def test_half_precision_weights_load_as_float32(tmp_path):
    model = UNet(1, 1, depth=1, base_channels=2, padding="same")
    save_model(model.half(), tmp_path)
    loaded = load_model(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    torch.testing.assert_close(loaded.head.weight, model.head.weight.float())


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda run: _edit_json(run / "model.json", base_channels=2048), "base_channels"),
        (lambda run: _edit_json(run / "model.json", in_channels=-1), "in_channels"),
        (lambda run: _edit_json(run / "model.json", norm="layer"), "norm"),
        (lambda run: _edit_json(run / "model.json", base_channels=8), "does not match"),
        (lambda run: (run / "model.json").write_text("[1, 2]"), "mapping"),
        (lambda run: (run / "model.safetensors").write_bytes(b"\x08" + bytes(9)), "model.safetensors"),
        (lambda run: (run / "classes.json").write_text("{}"), "classes.json is not a class list"),
    ],
    ids=["base-2048", "negative-channels", "unknown-norm", "shapes", "not-a-mapping", "bad-header",
         "classes"],
)
def test_predict_turns_any_damaged_run_into_a_message(tmp_path, capsys, damage, says):
    run = tmp_path / "run"
    save_model(UNet(1, 1, depth=1, base_channels=2, padding="same"), run)
    (run / "classes.json").write_text(json.dumps({"names": ["background", "cell"]}))
    image = tmp_path / "cells.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    damage(run)
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and str(run) in err


def _edit_json(path, **fields):
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
