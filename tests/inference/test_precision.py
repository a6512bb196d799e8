"""Prediction precision: the choice per device, float32 outputs, agreement of a trained network, runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inference_helpers import make_run, tiny_unet

from unetkit import precision as precision_module
from unetkit.data.classes import ClassInfo
from unetkit.data.synthetic import make_synthetic_cells
from unetkit.export import export_run, predictor_for
from unetkit.inference import Predictor
from unetkit.inference.agreement import AGREEMENT_FILE, agreement_record, label_agreement
from unetkit.models import UNet
from unetkit.precision import inference_dtype, prediction_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    "device, native, task, expected",
    [
        (CPU, True, "segmentation", torch.bfloat16),  # AVX512-BF16 / AMX
        (CPU, False, "segmentation", None),  # emulated bfloat16 is slower than float32
        (CUDA, True, "segmentation", torch.bfloat16),
        (CUDA, False, "segmentation", torch.float16),  # GPUs before bfloat16
        (CPU, True, "restoration", None),  # grey values: auto keeps float32
        (CUDA, False, "restoration", None),
    ],
)
def test_auto_precision_per_device_and_task(monkeypatch, device, native, task, expected):
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda _device: native)
    assert inference_dtype(device, "auto", task) == expected


def test_explicit_precisions_and_a_wrong_one():
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        assert inference_dtype(CPU, name) == dtype
        assert inference_dtype(CPU, name, "restoration") == dtype
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        inference_dtype(CPU, "int8")
    defaults = [prediction_precision(p) for p in ("fp32", "bf16", "auto", None)]
    assert defaults == ["fp32", "bf16", "auto", "auto"]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_outputs_are_float32_whatever_the_network_computes_in(precision):
    predictor = Predictor(tiny_unet(num_classes=3), tile_size=32, precision=precision, device="cpu")
    assert predictor.precision == precision
    probs = predictor.predict_proba(np.random.default_rng(0).random((40, 50), dtype=np.float32))
    assert probs.dtype == np.float32 and probs.shape == (3, 40, 50)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    restorer = Predictor(UNet(1, 1, depth=2, base_channels=4), task="restoration", precision=precision,
                         tile_size=32)
    assert restorer.predict(np.ones((40, 50), np.float32)).dtype == np.float32


def trained_cells_net() -> UNet:
    """A depth-2 U-Net trained for 150 Adam steps on synthetic cells (about 0.9 Dice)."""
    torch.manual_seed(0)
    model = UNet(1, 1, depth=2, base_channels=8, padding="same")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(150):
        cells = make_synthetic_cells((64, 64), seed=step)
        x = torch.from_numpy(cells.image[None].astype(np.float32))
        y = torch.from_numpy((cells.semantic > 0)[None, None].astype(np.float32))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_a_trained_network_gives_the_same_labels_in_reduced_precision(one_thread):
    model = trained_cells_net()
    cells = make_synthetic_cells((160, 160), seed=1000)  # a picture it has never seen
    image, truth = cells.image.astype(np.float32), cells.semantic > 0
    labels = {p: Predictor(model, tile_size=64, precision=p).predict(image) for p in ("fp32", "bf16", "fp16")}
    assert 2 * (labels["fp32"] & truth).sum() / (labels["fp32"].sum() + truth.sum()) > 0.85
    for reduced in ("bf16", "fp16"):
        assert np.mean(labels[reduced] == labels["fp32"]) >= 0.999


def test_a_run_predicts_in_the_precision_it_was_trained_in(tmp_path, monkeypatch):
    run = make_run(tmp_path, tiny_unet(), ClassInfo.binary())
    config = json.loads((run / "config.json").read_text())
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda _device: False)
    for trained, expected in (("bf16", "bf16"), ("fp32", "fp32"), ("auto", "fp32")):
        (run / "config.json").write_text(json.dumps({**config, "precision": trained}))
        assert Predictor.from_run(run, device="cpu").precision == expected
        assert Predictor(run, device="cpu").precision == expected
    assert Predictor.from_run(run, device="cpu", precision="bf16").precision == "bf16"  # the caller decides


def test_exported_networks_compute_in_float32(tmp_path):
    run = make_run(tmp_path, tiny_unet(), ClassInfo.binary())
    onnx = export_run(run, "onnx", tmp_path / "net.onnx")
    assert predictor_for(onnx, "onnxruntime", precision="auto").precision == "fp32"
    with pytest.raises(ValueError, match="needs the torch backend"):
        predictor_for(onnx, "onnxruntime", precision="bf16")


def test_auto_follows_the_agreement_measured_for_the_run(tmp_path, monkeypatch):
    """precision.json (written at the end of training): auto uses bfloat16 only where it kept >= 99.9% of
    the validation labels; a run without the record (or a damaged one) leaves it to the hardware."""
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda _device: True)
    run = make_run(tmp_path, tiny_unet(), ClassInfo.binary())
    assert Predictor.from_run(run, device="cpu").precision == "bf16"  # not measured
    for agreement, expected in ((0.9995, "bf16"), (0.9978, "fp32")):
        (run / AGREEMENT_FILE).write_text(json.dumps(agreement_record(agreement, 40)))
        assert Predictor.from_run(run, device="cpu").precision == expected
        assert Predictor.from_run(run, device="cpu", precision="bf16").precision == "bf16"  # forced
    (run / AGREEMENT_FILE).write_text("{ damaged")
    assert Predictor.from_run(run, device="cpu").precision == "bf16"


def test_label_agreement_counts_the_pixels_that_keep_their_label(one_thread):
    model = trained_cells_net()
    images = [make_synthetic_cells((96, 96), seed=2000 + i).image.astype(np.float32) for i in range(2)]

    def make(precision):
        return Predictor(model, tile_size=64, precision=precision)

    share = label_agreement(make, images)
    labels = [(make("fp32").predict(i), make("bf16").predict(i)) for i in images]
    expected = sum(int((a == b).sum()) for a, b in labels) / (2 * 96 * 96)
    assert share == expected and 0.999 <= share <= 1.0


def test_a_compiled_network_predicts_as_the_eager_one(tmp_path, one_thread):
    model = tiny_unet()
    image = np.random.default_rng(3).random((40, 50), dtype=np.float32)
    eager = Predictor(model, tile_size=32, precision="fp32").predict_proba(image)
    compiled = Predictor(model, tile_size=32, precision="fp32", compiled=True)
    np.testing.assert_allclose(compiled.predict_proba(image), eager, atol=1e-5)
    assert compiled.prediction_network() is compiled.prediction_network()  # compiled once
    onnx = export_run(make_run(tmp_path, model, ClassInfo.binary()), "onnx", tmp_path / "net.onnx")
    with pytest.raises(ValueError, match="compiled needs the torch backend"):
        predictor_for(onnx, "onnxruntime", compiled=True)
