"""Export to ONNX / TorchScript: parity with PyTorch, the stored contract, the backends in the Predictor."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import tifffile
import torch
from deploy_helpers import cells_png, make_restoration_run, make_run, threshold_model, tiny_unet
from PIL import Image
from skimage.draw import disk

from unetkit import export
from unetkit.checkpoint import ModelLoadError
from unetkit.cli import main
from unetkit.data.classes import ClassInfo
from unetkit.data.degrade import upscale
from unetkit.export import (
    ExportedModel,
    build_contract,
    export_model,
    export_run,
    load_backend,
    predictor_for,
    read_contract,
    sidecar_path,
    valid_size_rule,
)
from unetkit.inference import Predictor
from unetkit.models import EncoderDecoder, PlainFCN, UNet
from unetkit.utils.atomic import atomic_write_json

FILES = {"onnxruntime": ("onnx", "net.onnx"), "torchscript": ("torchscript", "net.torchscript.pt")}
CASES = [
    # dims, padding, up_mode, two valid input sizes
    (2, "valid", "transpose", (44, 60)),
    (2, "valid", "unpool", (44, 52)),
    (2, "same", "unpool", (32, 48)),
    (2, "same", "bilinear", (16, 40)),
    (3, "valid", "unpool", (44, 52)),
    (3, "same", "transpose", (16, 24)),
]


@pytest.mark.parametrize("kind", sorted(FILES))
@pytest.mark.parametrize("dims, padding, up_mode, sizes", CASES)
def test_exported_file_matches_pytorch(tmp_path, kind, dims, padding, up_mode, sizes):
    model = tiny_unet(dims=dims, padding=padding, up_mode=up_mode, num_classes=3, in_channels=2)
    fmt, name = FILES[kind]
    backend = load_backend(kind, export_model(model, tmp_path / name, fmt))
    for batch, size in zip((2, 1), sizes):
        x = torch.randn((batch, 2) + (size,) * dims)
        with torch.inference_mode():
            expected = model(x)
        got = backend(x)
        assert got.shape == expected.shape == (batch, 3) + (model.output_size(size),) * dims
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_contract_is_in_the_file_and_beside_it(binary_run, tmp_path):
    out = export_run(binary_run, "onnx", tmp_path / "exported" / "cells.onnx")
    contract = read_contract(out)
    assert contract == json.loads(sidecar_path(out).read_text())
    assert contract["model"] == json.loads((binary_run / "model.json").read_text())
    assert contract["classes"] == json.loads((binary_run / "classes.json").read_text())
    assert contract["normalize"]["mode"] == "percentile"
    assert contract["input"]["channel_order"] == "gray"
    assert contract["output"]["activation"] == "sigmoid"
    assert contract["valid_sizes"]["step"] == 4 and contract["valid_sizes"]["context"] == 0
    ts = export_run(binary_run, "torchscript", tmp_path / "cells.torchscript.pt")
    assert read_contract(ts) == contract


@pytest.mark.parametrize(
    "build",
    [UNet.paper, lambda: UNet(1, 2, dims=3, depth=2), lambda: PlainFCN(1, 2, num_layers=3, padding="valid")],
    ids=["paper", "valid-3d", "plain-fcn"],
)
def test_valid_size_rule_matches_the_network(build):
    with torch.device("meta"):  # size rules only
        model = build()
    rule = valid_size_rule(model)
    for size in range(1, 700):
        on_rule = size >= rule["first"] and (size - rule["first"]) % rule["step"] == 0
        assert model.is_valid_input_size(size) == on_rule
        if on_rule:
            assert model.axis_output_size(size) == size - 2 * rule["context"]
    if isinstance(model, UNet) and model.depth == 4:
        assert (rule["context"], rule["step"]) == (92, 16)


def test_pipeline_without_unetkit_reproduces_the_predictor(tmp_path):
    """Only numpy + onnxruntime + the contract: same mask as the unetkit Predictor."""
    run = make_run(tmp_path / "run", tiny_unet(num_classes=3), ClassInfo(["bg", "a", "b"]))
    out = export_run(run, "onnx", tmp_path / "model.onnx")
    image = np.random.default_rng(0).integers(0, 4000, (32, 48)).astype(np.uint16)

    contract = json.loads(sidecar_path(out).read_text())
    norm = contract["normalize"]
    x = image[None].astype(np.float32)
    low, high = np.percentile(x.reshape(1, -1), [norm["low"], norm["high"]], axis=1)
    x = (x - low[:, None, None]) / np.maximum(high - low, 1e-6)[:, None, None]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {contract["input"]["name"]: x[None].astype(np.float32)}
    logits = session.run([contract["output"]["name"]], feed)[0]
    labels = logits[0].argmax(axis=0)

    expected = Predictor.from_run(run, device="cpu").predict(image)
    assert labels.shape == expected.shape == image.shape
    assert (labels == expected).mean() > 0.999


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_predictor_with_backend_matches_torch(tmp_path, backend, padding):
    """Tiled prediction of an image of an awkward size: same probabilities through every backend."""
    run = make_run(tmp_path / "run", tiny_unet(padding=padding))
    image = np.random.default_rng(1).random((70, 53)).astype(np.float32)
    expected = Predictor.from_run(run, device="cpu", tile_size=64).predict_proba(image)
    predictor = predictor_for(run, backend, device="cpu", tile_size=64)
    assert isinstance(predictor.model, ExportedModel)
    assert predictor.classes.encoding == "binary255"
    np.testing.assert_allclose(predictor.predict_proba(image), expected, atol=1e-4)


def test_export_command_and_its_errors(binary_run, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(binary_run), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and sidecar_path(out).is_file()
    assert main(["export", str(tmp_path / "missing"), "--format", "torchscript"]) == 2
    assert "missing is not a folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="reads .onnx files"):
        load_backend("onnxruntime", export_run(binary_run, "torchscript"))
    not_ours = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(1, 1, 1), (torch.zeros(1, 1, 4, 4),), str(not_ours), dynamo=False)
    with pytest.raises(ValueError, match="holds no unetkit contract"):
        load_backend("onnxruntime", not_ours)


def test_predict_command_takes_a_backend(tmp_path):
    run = make_run(tmp_path / "run", tiny_unet(padding="valid"))
    image = tmp_path / "in" / "cells.png"
    image.parent.mkdir()
    image.write_bytes(cells_png(shape=(50, 70))[0])
    masks = {}
    for backend in ("torch", "onnxruntime", "torchscript"):
        out = tmp_path / backend
        args = ["predict", str(run), str(image), "--out", str(out), "--backend", backend]
        assert main(args) == 0
        masks[backend] = np.asarray(Image.open(out / "cells.png"))
    assert masks["torch"].shape == (50, 70)
    for backend in ("onnxruntime", "torchscript"):
        assert (masks[backend] == masks["torch"]).mean() > 0.999


@pytest.mark.parametrize("kind", sorted(FILES))
@pytest.mark.parametrize(
    "build",
    [lambda: PlainFCN(1, 2, base_channels=4, num_layers=3, padding="valid"),
     lambda: EncoderDecoder(1, 2, depth=2, base_channels=4, up_mode="unpool")],
    ids=["plain-fcn", "encoder-decoder"],
)
def test_baselines_export_too(tmp_path, kind, build):
    torch.manual_seed(0)
    model = build().eval()
    fmt, name = FILES[kind]
    backend = load_backend(kind, export_model(model, tmp_path / name, fmt))
    for size in (20, 36):
        x = torch.randn(2, 1, size, size)
        with torch.inference_mode():
            torch.testing.assert_close(backend(x), model(x), atol=1e-4, rtol=1e-4)


def test_object_scale_travels_from_the_run_to_predictors_and_exports(tmp_path):
    """A run trained at a set object diameter predicts each image at that scale, through every backend."""
    run = make_run(tmp_path / "run", threshold_model())
    config = json.loads((run / "config.json").read_text())
    atomic_write_json(run / "config.json", {**config, "data": {**config["data"], "object_diameter": 20.0}})
    image = np.zeros((96, 96), np.uint8)
    for centre in ((20, 20), (20, 60), (60, 30), (70, 75)):
        image[disk(centre, 5, shape=image.shape)] = 200

    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.object_diameter == 20.0
    probabilities = predictor.predict_proba(image)
    assert probabilities.shape == (2, 96, 96)
    truth = image > 0
    predicted = probabilities.argmax(axis=0) == 1
    assert (predicted & truth).sum() / (predicted | truth).sum() > 0.8
    with pytest.raises(ValueError, match="object_diameter"):
        Predictor(threshold_model(), object_diameter=-1.0)

    out = export_run(run, "onnx", tmp_path / "net.onnx")
    assert read_contract(out)["object_scale"]["diameter"] == 20.0
    exported = predictor_for(out, "onnxruntime", device="cpu")
    assert exported.object_diameter == 20.0
    np.testing.assert_allclose(exported.predict_proba(image), probabilities, atol=1e-4)

    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, image)
    with pytest.raises(ValueError, match="whole image"):
        predictor.predict_file(src, tmp_path / "mask.tif", stream=True)
    result = predictor.predict_file(src, tmp_path / "mask.tif")
    assert result.labels.shape == (96, 96)


@pytest.mark.parametrize("scale", [1, 2], ids=["denoise", "super-resolve-x2"])
def test_restoration_export_matches_torch(tmp_path, scale):
    """A restoration run through ONNX and TorchScript: the contract says image / identity / residual, and
    the restored image (on the input's scale, ``scale`` times larger) is PyTorch's."""
    run = make_restoration_run(tmp_path / "run", scale=scale)
    image = np.random.default_rng(2).random((30, 37)).astype(np.float32)
    expected = Predictor.from_run(run, device="cpu").restore(image)
    assert expected.shape == (1, 30 * scale, 37 * scale)
    plain = upscale(image[None], scale) if scale > 1 else image[None]
    assert np.abs(expected - plain).max() > 1e-2  # the network changes the image: the parity means something
    for backend, (fmt, name) in FILES.items():
        out = export_run(run, fmt, tmp_path / name)
        contract = read_contract(out)
        assert (contract["task"], contract["scale"], contract["classes"]) == ("restoration", scale, None)
        output = contract["output"]
        assert (output["kind"], output["activation"]) == ("image", "none (identity)") and output["residual"]
        assert "offset" in output["denormalize"] and (output["upscale"] is None) == (scale == 1)
        if scale > 1:
            assert "a = -0.5" in output["upscale"]
        predictor = predictor_for(out, backend, device="cpu")
        assert isinstance(predictor.model, ExportedModel)
        assert (predictor.model.task, predictor.model.scale) == ("restoration", scale)
        assert (predictor.task, predictor.scale) == ("restoration", scale)
        np.testing.assert_allclose(predictor.restore(image), expected, atol=1e-4)
    from_folder = predictor_for(run, "onnxruntime", device="cpu")  # exported in memory
    np.testing.assert_allclose(from_folder.predict(image), expected, atol=1e-4)


def test_contracts_state_the_task_and_older_files_are_segmentation(binary_run, tmp_path):
    import onnx

    out = export_run(binary_run, "onnx", tmp_path / "m.onnx")
    contract = read_contract(out)
    assert (contract["task"], contract["scale"]) == ("segmentation", 1)
    assert (contract["output"]["name"], contract["output"]["kind"]) == ("logits", "logits")
    proto = onnx.load(str(out))  # a file from before the task: no "task" and "scale" entries
    kept = [p for p in proto.metadata_props if p.key not in ("task", "scale")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(out))
    atomic_write_json(sidecar_path(out), {k: v for k, v in contract.items() if k not in ("task", "scale")})
    predictor = predictor_for(out, "onnxruntime", device="cpu")
    assert (predictor.model.task, predictor.model.scale) == ("segmentation", 1)
    assert predictor.task == "segmentation"
    assert predictor.predict(np.zeros((16, 16), np.float32)).shape == (16, 16)
    with pytest.raises(ValueError, match="task must be one of"):
        build_contract(tiny_unet(), task="denoise")
    with pytest.raises(ValueError, match="scale must be 1"):
        build_contract(tiny_unet(), scale=2)


def test_the_torchscript_contract_is_read_without_loading_the_module(binary_run, tmp_path, monkeypatch):
    ts = export_run(binary_run, "torchscript", tmp_path / "m.torchscript.pt")

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the code stored in the file")

    monkeypatch.setattr(torch.jit, "load", refuse)
    assert read_contract(ts) == json.loads(sidecar_path(ts).read_text())


@pytest.mark.parametrize("fmt, name", [("onnx", "m.onnx"), ("torchscript", "m.torchscript.pt")])
def test_an_export_killed_before_its_contract_is_caught_on_load(binary_run, tmp_path, monkeypatch, fmt, name):
    out = export_run(binary_run, fmt, tmp_path / name)
    other = make_run(tmp_path / "other", tiny_unet(base_channels=8))

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(export, "atomic_write_json", killed)
    with pytest.raises(RuntimeError, match="killed"):
        export_run(other, fmt, out)  # the new file is written, its contract beside it is not
    monkeypatch.undo()
    with pytest.raises(ModelLoadError, match=f"{name}.json does not match the contract inside"):
        read_contract(out)
    sidecar_path(out).unlink()  # the contract inside the file is the one that counts
    assert read_contract(out)["model"]["base_channels"] == 8


@pytest.mark.parametrize(
    "name, backend, data, says",
    [
        ("m.onnx", "onnxruntime", b"not an onnx file", "m.onnx"),
        ("m.torchscript.pt", "torchscript", b"not a zip", "m.torchscript.pt"),
        ("m.onnx", "onnxruntime", None, "m.onnx: the network in its contract is not valid: model config"),
    ],
    ids=["onnx-garbage", "torchscript-garbage", "onnx-contract-base-2048"],
)
def test_predict_turns_a_damaged_export_into_a_message(binary_run, tmp_path, capsys, name, backend, data,
                                                       says):
    path = tmp_path / name
    if data is None:  # a crafted contract: a network of absurd size
        import onnx

        proto = onnx.load(str(export_run(binary_run, "onnx", path)))
        for entry in proto.metadata_props:
            if entry.key == "model":
                entry.value = json.dumps({**json.loads(entry.value), "base_channels": 2048})
        onnx.save(proto, str(path))
        sidecar_path(path).unlink()
    else:
        path.write_bytes(data)
    image = tmp_path / "cells.png"
    image.write_bytes(cells_png(shape=(16, 16))[0])
    assert main(["predict", str(path), str(image), "--out", str(tmp_path / "out"), "--backend", backend]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err
