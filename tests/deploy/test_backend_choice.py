"""``backend="auto"``: the fastest backend that gives the same labels, measured once and cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from deploy_helpers import cells_png, make_run, tiny_unet

from unetkit import export
from unetkit import precision as precision_module
from unetkit.cli import main
from unetkit.export import export_run, predictor_for
from unetkit.inference import Predictor, backend_choice
from unetkit.inference.backend_choice import CACHE_FILE, cache_dir, cached_choice, measure


def test_auto_measures_once_then_reads_the_cache(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", tiny_unet())
    first = predictor_for(run, device="cpu")
    choice = first.backend_choice
    assert not choice.cached and set(choice.seconds) == {"torch", "onnxruntime"}
    assert first.backend == choice.backend and choice.seconds[choice.backend] == min(choice.seconds.values())
    assert all(share >= 0.999 for share in choice.agreement.values())
    entries = json.loads((cache_dir() / CACHE_FILE).read_text())
    assert [entry["backend"] for entry in entries.values()] == [choice.backend]

    def no_measurement(*args, **kwargs):
        raise AssertionError("measured again although the choice is cached")

    monkeypatch.setattr(backend_choice, "measure", no_measurement)
    second = predictor_for(run, device="cpu")
    assert second.backend_choice.cached and second.backend == first.backend
    image = np.random.default_rng(0).random((40, 40), dtype=np.float32)
    np.testing.assert_allclose(second.predict_proba(image), first.predict_proba(image), atol=1e-4)


def test_another_tile_or_precision_is_measured_apart(tmp_path):
    run = make_run(tmp_path / "run", tiny_unet())
    predictor_for(run, device="cpu")
    predictor_for(run, device="cpu", tile_size=64)
    predictor_for(run, device="cpu", precision="auto")
    assert len(json.loads((cache_dir() / CACHE_FILE).read_text())) == 3


def test_a_damaged_cache_is_measured_again_and_rewritten(tmp_path):
    run = make_run(tmp_path / "run", tiny_unet())
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / CACHE_FILE).write_text('{"half a file": ')
    assert not predictor_for(run, device="cpu").backend_choice.cached
    assert len(json.loads((cache_dir() / CACHE_FILE).read_text())) == 1
    assert cached_choice({"backend": "onnxruntime", "seconds": {}}, {"torch", "onnxruntime"}) is None
    good = {"backend": "onnxruntime", "seconds": {"torch": 2.0, "onnxruntime": 1.0}, "agreement": {},
            "tile": [64, 64], "batch": 1}
    assert cached_choice(good, {"torch", "onnxruntime"}).backend == "onnxruntime"
    assert cached_choice(good, {"torch"}) is None  # ONNX Runtime uninstalled since


def test_torch_without_measurement_when_onnxruntime_is_missing_or_reduced_precision_is_forced(
    tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", tiny_unet())
    forced = predictor_for(run, device="cpu", precision="bf16")
    assert forced.backend == "torch" and forced.precision == "bf16" and not forced.backend_choice.seconds
    monkeypatch.setattr(export, "onnxruntime_available", lambda: False)
    fallback = predictor_for(run, device="cpu")
    assert fallback.backend == "torch" and not fallback.backend_choice.seconds
    assert not (cache_dir() / CACHE_FILE).exists()


def test_an_exported_file_runs_in_its_own_runtime(tmp_path):
    run = make_run(tmp_path / "run", tiny_unet())
    assert predictor_for(export_run(run, "onnx", tmp_path / "m.onnx")).backend == "onnxruntime"
    assert predictor_for(export_run(run, "torchscript", tmp_path / "m.pt")).backend == "torchscript"


def test_a_faster_backend_with_other_labels_is_not_chosen():
    """Two real networks: a slow one (the reference) and a much faster one with other weights."""
    torch.manual_seed(0)
    slow = Predictor(tiny_unet(base_channels=32, depth=3), tile_size=128, precision="fp32")
    fast = Predictor(tiny_unet(base_channels=2, depth=1), tile_size=128, precision="fp32")
    choice = measure({"torch": slow, "onnxruntime": fast}, slow, repeats=1)
    assert choice.seconds["onnxruntime"] < choice.seconds["torch"]
    assert choice.agreement["onnxruntime"] < 0.999 and choice.backend == "torch"


def test_predict_reports_what_runs_the_network(tmp_path, capsys):
    run = make_run(tmp_path / "run", tiny_unet())
    image = tmp_path / "in" / "cells.png"
    image.parent.mkdir()
    image.write_bytes(cells_png(shape=(40, 50))[0])
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "a")]) == 0
    assert "network: " in capsys.readouterr().err
    args = ["predict", str(run), str(image), "--out", str(tmp_path / "b"), "--precision", "bf16",
            "--max-memory", "200MB"]
    assert main(args) == 0
    assert "network: torch, bf16, cpu" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args[:-1], "lots"])
    assert "is not a memory size" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs the torch backend"):
        predictor_for(run, "onnxruntime", precision="fp16")


def test_auto_also_times_float32_when_the_run_would_compute_in_bfloat16(tmp_path, monkeypatch):
    """bfloat16 does not pay for every network (a 4-channel one runs faster in float32 here)."""
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda _device: True)
    run = make_run(tmp_path / "run", tiny_unet())
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "precision": "auto"}))
    predictor = predictor_for(run, device="cpu")
    choice = predictor.backend_choice
    assert set(choice.seconds) == {"torch", "torch:fp32", "onnxruntime"}
    assert choice.seconds[choice.backend] == min(choice.seconds.values())
    assert predictor.precision == ("bf16" if choice.backend == "torch" else "fp32")
    assert predictor_for(run, device="cpu").backend_choice.cached
