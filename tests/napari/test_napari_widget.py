"""The Predict dock widget in a real (unshown) napari viewer: layers from tiny runs, progress, cancel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_helpers import (  # noqa: E402
    cells_image,
    dice,
    run_widget,
    super_resolution_run,
    untrained_run,
)

from unetkit.inference import Predictor  # noqa: E402


def dock_predict_widget(viewer):
    """The plugin's widget as a user opens it: Plugins > unetkit > Predict (through its npe2 manifest)."""
    _, widget = viewer.window.add_plugin_dock_widget("unetkit", "Predict")
    return widget


def test_a_trained_run_segments_an_image_into_classes_and_objects(make_napari_viewer, qtbot,
                                                                  segmentation_run):
    viewer = make_napari_viewer()
    image, truth = cells_image((96, 96))
    viewer.add_image(image, name="cells", scale=(0.5, 0.5))
    widget = dock_predict_widget(viewer)
    widget.set_run(segmentation_run)
    assert "2D segmentation" in widget.run_info.text() and "objects by watershed" in widget.run_info.text()
    assert widget.objects_check.isEnabled()
    widget.objects_check.setChecked(True)
    widget.tile_spin.setValue(48)  # several tiles, so that the bar counts them
    run_widget(qtbot, widget)

    assert widget.status.text() == "added cells classes, cells objects"
    classes, objects = viewer.layers["cells classes"], viewer.layers["cells objects"]
    assert isinstance(classes, napari.layers.Labels) and isinstance(objects, napari.layers.Labels)
    assert classes.data.shape == objects.data.shape == image.shape
    assert classes.data.dtype == np.uint8 and objects.data.dtype == np.uint32
    np.testing.assert_array_equal(classes.scale, [0.5, 0.5])
    predictor = Predictor.from_run(segmentation_run, device="cpu", tile_size=48)
    np.testing.assert_array_equal(classes.data, predictor.predict(image))
    assert set(np.unique(classes.data)) == {0, 1}
    assert dice(classes.data == 1, truth) > 0.6
    assert objects.data.max() >= 3  # objects: the foreground (holes filled), split by the watershed
    assert not objects.data[~ndi.binary_fill_holes(classes.data == 1)].any()
    assert widget.progress_bar.maximum() > 1 and widget.progress_bar.value() == widget.progress_bar.maximum()

    # predicting again replaces the layers rather than stacking copies
    run_widget(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["cells", "cells classes", "cells objects"]


def test_volumes_and_stacks_of_planes(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = dock_predict_widget(viewer)
    volume, _ = cells_image((16, 40, 40), seed=3, dims=3)
    viewer.add_image(volume, name="volume")
    widget.set_run(untrained_run(tmp_path / "run3d", dims=3))
    assert "3D segmentation" in widget.run_info.text()
    widget.image_combo.setCurrentText("volume")
    run_widget(qtbot, widget)
    labels = viewer.layers["volume classes"].data
    assert labels.shape == volume.shape and labels.dtype == np.uint8
    expected = Predictor.from_run(tmp_path / "run3d", device="cpu").predict(volume)
    np.testing.assert_array_equal(labels, expected)

    # a 2D run on a (T, H, W) layer: each plane on its own
    stack = np.stack([cells_image((48, 48), seed=s)[0] for s in (1, 2, 3)])
    viewer.add_image(stack, name="stack")
    run2d = untrained_run(tmp_path / "run2d", dims=2)
    widget.set_run(run2d)
    widget.image_combo.setCurrentText("stack")
    run_widget(qtbot, widget)
    labels = viewer.layers["stack classes"].data
    assert labels.shape == stack.shape
    predictor = Predictor.from_run(run2d, device="cpu")
    for plane, image in zip(labels, stack):
        np.testing.assert_array_equal(plane, predictor.predict(image))


def test_a_restoration_run_adds_an_image_layer_on_the_source_grid(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    image, _ = cells_image((40, 48))
    viewer.add_image(image, name="noisy", scale=(2.0, 2.0))
    widget = dock_predict_widget(viewer)
    run = super_resolution_run(tmp_path / "sr", scale=2)
    widget.set_run(run)
    assert "restoration" in widget.run_info.text() and "2x super-resolution" in widget.run_info.text()
    assert not widget.objects_check.isEnabled()
    run_widget(qtbot, widget)

    restored = viewer.layers["noisy restored"]
    assert isinstance(restored, napari.layers.Image) and not isinstance(restored, napari.layers.Labels)
    assert restored.data.shape == (80, 96) and restored.data.dtype == np.float32
    expected = Predictor.from_run(run, device="cpu").restore(image)[0]
    np.testing.assert_allclose(restored.data, expected, rtol=1e-5)
    # half the pixel size, the same field of view: the upscaled pixel centres sit inside the source pixels
    np.testing.assert_array_equal(restored.scale, [1.0, 1.0])
    np.testing.assert_allclose(restored.translate, [-0.5, -0.5])


def test_cancel_stops_the_prediction_and_adds_nothing(make_napari_viewer, qtbot, segmentation_run):
    viewer = make_napari_viewer()
    viewer.add_image(cells_image((1024, 1024))[0], name="big")
    widget = dock_predict_widget(viewer)
    widget.set_run(segmentation_run)
    widget.tile_spin.setValue(32)  # about 1800 tiles: far more than run before the cancel arrives
    widget.predict_button.click()
    assert widget.cancel_button.isEnabled() and not widget.predict_button.isEnabled()
    widget.cancel_button.click()
    qtbot.waitUntil(widget.predict_button.isEnabled, timeout=60_000)
    assert widget.status.text() == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert not widget.cancel_button.isEnabled()


def test_a_folder_that_is_no_run_and_a_failed_prediction_are_reported(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = dock_predict_widget(viewer)
    widget.set_run(tmp_path)
    assert widget.run_info.text().startswith("cannot use this run:")
    assert not widget.objects_check.isEnabled()
    widget.predict_button.click()  # no image layer either
    assert widget.status.text() == "choose a run and an image layer first"
    # a failure in the worker (a 3D run for a 2D image) is shown, and the widget is ready again
    viewer.add_image(cells_image((32, 32))[0], name="flat")
    widget.set_run(untrained_run(tmp_path / "run3d", dims=3))
    run_widget(qtbot, widget)
    assert widget.status.text() == "failed: a 3D model needs a layer with 3 spatial axes, got shape (32, 32)"
    assert [layer.name for layer in viewer.layers] == ["flat"]
