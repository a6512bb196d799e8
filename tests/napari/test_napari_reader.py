"""The reader: what `unetkit predict --out DIR` writes, opened in napari as layers."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_helpers import cells_image  # noqa: E402
from PIL import Image  # noqa: E402

from unetkit.cli import main  # noqa: E402
from unetkit.inference import Predictor  # noqa: E402
from unetkit.napari._reader import get_reader, mask_to_ids  # noqa: E402


@pytest.fixture
def predicted(tmp_path, segmentation_run):
    """``unetkit predict RUN a.png b.png --out OUT --save-probabilities --instances``: OUT and the images."""
    images = {}
    for stem, seed in (("a", 1), ("b", 2)):
        images[stem] = cells_image((64, 80), seed=seed)[0]
        Image.fromarray(images[stem]).save(tmp_path / f"{stem}.png")
    out = tmp_path / "out"
    code = main(["predict", str(segmentation_run), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                 "--out", str(out), "--save-probabilities", "--instances", "--device", "cpu",
                 "--backend", "torch"])  # the runtime the test's own Predictor uses
    assert code == 0
    return out, images


def test_the_predict_folder_opens_as_classes_probabilities_and_objects(make_napari_viewer, predicted,
                                                                       segmentation_run):
    out, images = predicted
    viewer = make_napari_viewer()
    viewer.open(out, plugin="unetkit")
    assert [layer.name for layer in viewer.layers] == [
        "a classes", "b classes",
        "a probability 0", "a probability 1", "a objects",
        "b probability 0", "b probability 1", "b objects",
    ]
    predictor = Predictor.from_run(segmentation_run, device="cpu")
    for stem, image in images.items():
        classes = viewer.layers[f"{stem} classes"]
        assert isinstance(classes, napari.layers.Labels) and classes.data.shape == image.shape
        np.testing.assert_array_equal(classes.data, predictor.predict(image))  # 0/255 on disk, 0/1 here
        probabilities = [viewer.layers[f"{stem} probability {k}"] for k in (0, 1)]
        assert all(isinstance(p, napari.layers.Image) for p in probabilities)
        assert [p.visible for p in probabilities] == [False, True]
        assert probabilities[1].data.dtype == np.float32 and probabilities[1].data.shape == image.shape
        np.testing.assert_allclose(probabilities[0].data + probabilities[1].data, 1.0, atol=1e-5)
        np.testing.assert_array_equal(probabilities[1].data > 0.5, classes.data == 1)
        objects = viewer.layers[f"{stem} objects"]
        assert isinstance(objects, napari.layers.Labels) and objects.data.shape == image.shape
        assert objects.data.max() >= 1


def test_single_prediction_files_and_what_the_reader_leaves_to_others(make_napari_viewer, predicted):
    out, _ = predicted
    viewer = make_napari_viewer()
    viewer.open(out / "a_prob.tif", plugin="unetkit")
    viewer.open(out / "b_instances.tif", plugin="unetkit")
    assert [layer.name for layer in viewer.layers] == ["a probability 0", "a probability 1", "b objects"]
    probabilities = tifffile.imread(out / "a_prob.tif")
    np.testing.assert_array_equal(viewer.layers["a probability 1"].data, probabilities[1])
    np.testing.assert_array_equal(viewer.layers["b objects"].data, tifffile.imread(out / "b_instances.tif"))
    # a mask alone, an input image or a folder without predictions: not this reader's
    assert get_reader(str(out / "a.png")) is None
    assert get_reader(str(out.parent)) is None
    assert get_reader([str(out / "a_prob.tif"), str(out / "b_prob.tif")]) is not None


def test_masks_become_class_ids():
    np.testing.assert_array_equal(mask_to_ids(np.array([[0, 255], [255, 0]], np.uint8)), [[0, 1], [1, 0]])
    ids = np.array([[0, 2], [5, 2]], np.uint8)
    np.testing.assert_array_equal(mask_to_ids(ids), ids)  # class ids (or palette indices) stay
    colours = np.array([[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [255, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(mask_to_ids(colours), [[0, 2], [1, 2]])  # black 0, then colour order
