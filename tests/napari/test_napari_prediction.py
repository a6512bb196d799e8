"""The widget's Qt-free glue (:mod:`unetkit.napari.prediction`): layer layouts, progress, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from napari_helpers import cells_image, untrained_run

from unetkit.inference import Predictor
from unetkit.inference.files import convert_channels
from unetkit.napari.prediction import (
    LayerLayout,
    PredictionCancelled,
    layer_layout,
    load_predictor,
    plane_of,
    predict_layer,
)


def test_layer_layouts():
    assert layer_layout((5, 64, 80), rgb=False, dims=2, in_channels=1) == LayerLayout((5,), None, (64, 80))
    assert layer_layout((64, 80, 4), rgb=True, dims=2, in_channels=1) == LayerLayout((), 2, (64, 80))
    assert layer_layout((2, 3, 64, 80), rgb=False, dims=2, in_channels=3) == LayerLayout((2,), 1, (64, 80))
    assert layer_layout((8, 64, 80), rgb=False, dims=3, in_channels=1) == LayerLayout((), None, (8, 64, 80))
    # a grey layer for an RGB model: repeated into three channels at prediction
    assert layer_layout((64, 80), rgb=False, dims=2, in_channels=3) == LayerLayout((), None, (64, 80))
    with pytest.raises(ValueError, match="a 3D model needs a layer with 3 spatial axes"):
        layer_layout((64, 80), rgb=False, dims=3, in_channels=1)
    with pytest.raises(ValueError, match="the model takes 2 channels"):
        layer_layout((3, 64, 80), rgb=False, dims=2, in_channels=2)
    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    layout = layer_layout(data.shape, rgb=False, dims=2, in_channels=3)
    np.testing.assert_array_equal(plane_of(data, layout, (1,)), data[1])
    rgb = np.arange(4 * 5 * 3).reshape(4, 5, 3)
    layout = layer_layout(rgb.shape, rgb=True, dims=2, in_channels=1)
    np.testing.assert_array_equal(plane_of(rgb, layout, ()), np.moveaxis(rgb, -1, 0))


def test_progress_counts_every_tile_and_an_rgb_layer_goes_through_its_luminance(tmp_path):
    run = untrained_run(tmp_path / "run", dims=2)
    predictor = load_predictor(run, tile_size=32, device="cpu")
    grey, _ = cells_image((64, 96))
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    calls = []
    result = predict_layer(predictor, rgb, rgb=True, progress=lambda done, total: calls.append((done, total)))
    expected = Predictor.from_run(run, device="cpu", tile_size=32).predict(
        convert_channels(np.moveaxis(rgb, -1, 0), "gray"))
    np.testing.assert_array_equal(result.labels, expected)
    total = calls[0][1]
    assert calls[0] == (0, total) and calls[-1] == (total, total) and total > 4
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_cancel_stops_before_a_tile_and_leaves_the_network_unhooked(tmp_path):
    predictor = load_predictor(untrained_run(tmp_path / "run", dims=2), tile_size=32, device="cpu")
    cancel = threading.Event()
    cancel.set()
    tiles = []
    with pytest.raises(PredictionCancelled):
        predict_layer(predictor, cells_image((64, 64))[0], progress=lambda done, _: tiles.append(done),
                      cancel=cancel)
    assert tiles == [0]
    assert not predictor.model._forward_hooks and not predictor.model._forward_pre_hooks
    with pytest.raises(FileNotFoundError, match="neither a RUN folder"):
        load_predictor(tmp_path / "model.bin")


def test_an_exported_model_predicts_as_its_run_with_progress_by_plane(tmp_path):
    pytest.importorskip("onnxruntime")
    from unetkit.export import export_run

    run = untrained_run(tmp_path / "run", dims=2)
    exported = export_run(run, "onnx", tmp_path / "cells.onnx")
    predictor = load_predictor(exported)
    assert predictor.classes.names == ["background", "foreground"]
    stack = np.stack([cells_image((48, 64), seed=s)[0] for s in (1, 2)])
    calls = []
    result = predict_layer(predictor, stack, instances=True, progress=lambda *call: calls.append(call))
    assert calls == [(0, 2), (1, 2), (2, 2)]  # no torch module to hook: one step per plane
    reference = Predictor.from_run(run, device="cpu", precision="fp32")
    for labels, image in zip(result.labels, stack):  # ONNX Runtime's float sums may flip a pixel at 0.5
        assert np.mean(labels == reference.predict(image)) > 0.999
    assert result.instances.shape == stack.shape and result.instances.dtype == np.uint32
