"""From probabilities to objects, their measurements and their COCO export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from unetkit.instances import (
    CocoCollection,
    InstanceConfig,
    coco_dataset,
    instances_from_foreground,
    instances_from_three_class,
    object_table,
    otsu_watershed,
    save_instance_labels,
    write_object_table,
)


def two_touching_discs(shape=(64, 64), radius=10):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    a = (yy - 32) ** 2 + (xx - 22) ** 2 <= radius**2
    b = (yy - 32) ** 2 + (xx - 40) ** 2 <= radius**2
    labels = np.zeros(shape, dtype=np.int32)
    labels[a] = 1
    labels[b & ~a] = 2
    return labels


def test_watershed_separates_touching_discs_components_do_not():
    labels = two_touching_discs()
    probability = (labels > 0).astype(np.float32)
    assert instances_from_foreground(probability, InstanceConfig(method="components")).max() == 1
    split = instances_from_foreground(probability, InstanceConfig(method="watershed", min_distance=5))
    assert split.max() == 2
    assert split.dtype == np.uint32
    for value in (1, 2):  # each found object lies (almost) inside one of the true discs
        overlap = np.bincount(labels[split == value], minlength=3)[1:]
        assert overlap.max() / overlap.sum() > 0.95


def test_min_size_and_holes():
    probability = np.zeros((40, 40), dtype=np.float32)
    probability[5:15, 5:15] = 1.0
    probability[9:11, 9:11] = 0.0  # a hole
    probability[30:32, 30:32] = 1.0  # 4 px speck
    labels = instances_from_foreground(probability, InstanceConfig(min_size=10))
    assert labels.max() == 1
    assert labels[10, 10] == 1  # the hole was filled


def test_three_class_route_recovers_touching_objects():
    truth = two_touching_discs()
    from scipy import ndimage as ndi

    border = np.zeros_like(truth, dtype=bool)
    for value in (1, 2):
        obj = truth == value
        border |= obj & ~ndi.binary_erosion(obj, iterations=2)
    three = np.where(truth == 0, 0, np.where(border, 2, 1))
    probabilities = np.stack([(three == k).astype(np.float32) for k in range(3)])
    labels = instances_from_three_class(probabilities)
    assert labels.max() == 2
    assert (labels > 0).sum() == (truth > 0).sum()
    with pytest.raises(ValueError, match="three-class"):
        instances_from_three_class(probabilities[:2])


def test_otsu_baseline_finds_dark_or_bright_objects():
    truth = two_touching_discs()
    rng = np.random.default_rng(0)
    bright = (truth > 0) * 0.8 + 0.1 + rng.normal(0, 0.02, truth.shape)
    assert otsu_watershed(bright[None]).max() == 2
    assert otsu_watershed(1 - bright).max() == 2
    assert otsu_watershed(np.zeros((8, 8))).max() == 0


def test_object_table_2d_and_3d(tmp_path):
    labels = np.zeros((10, 20), dtype=np.int32)
    labels[2:4, 3:9] = 7  # 2 x 6 rectangle
    image = np.stack([labels * 0.5, np.ones_like(labels, dtype=float)])
    (row,) = object_table(labels, image)
    assert row["id"] == 7 and row["area"] == 12
    assert (row["centroid_y"], row["centroid_x"]) == (2.5, 5.5)
    assert (row["bbox_min_y"], row["bbox_min_x"], row["bbox_max_y"], row["bbox_max_x"]) == (2, 3, 4, 9)
    assert row["mean_intensity_0"] == 3.5 and row["max_intensity_1"] == 1.0
    assert 0 < row["eccentricity"] < 1 and row["solidity"] == 1.0
    write_object_table(tmp_path / "objects.csv", [row])
    assert (tmp_path / "objects.csv").read_text().startswith("id,area,centroid_y")
    volume = np.zeros((5, 6, 6), dtype=np.int32)
    volume[1:4, 1:4, 1:4] = 1
    (row3,) = object_table(volume)
    assert row3["area"] == 27 and row3["centroid_z"] == 2.0 and "eccentricity" not in row3
    with pytest.raises(ValueError, match="does not match"):
        object_table(labels, np.zeros((2, 5, 5)))
    write_object_table(tmp_path / "empty.csv", object_table(np.zeros((4, 4), dtype=np.int32)))
    assert (tmp_path / "empty.csv").read_text() == "id,area\n"


def test_instance_labels_file_dtype(tmp_path):
    save_instance_labels(tmp_path / "small.tif", np.array([[0, 3]]))
    assert tifffile.imread(tmp_path / "small.tif").dtype == np.uint16
    save_instance_labels(tmp_path / "big.tif", np.array([[0, 70000]]))
    assert tifffile.imread(tmp_path / "big.tif").dtype == np.uint32


def test_coco_json_round_trips_through_pycocotools(tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco")
    first = two_touching_discs()
    second = np.zeros((30, 50), dtype=np.int32)
    second[3:9, 10:30] = 4
    path = tmp_path / "objects_coco.json"
    collection = CocoCollection(category="nucleus")
    collection.add("a.png", first)
    collection.add("b.png", second)
    collection.write(path)
    data = json.loads(path.read_text())
    assert [a["bbox"] for a in data["annotations"] if a["image_id"] == 2] == [[10, 3, 20, 6]]
    coco = coco_api.COCO(str(path))
    assert coco.getCatIds() == [1] and len(coco.getAnnIds()) == 3
    for image_id, labels in ((1, first), (2, second)):
        masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]
        expected = [(labels == v).astype(np.uint8) for v in np.unique(labels) if v]
        assert len(masks) == len(expected)
        for got, want in zip(masks, expected):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="2D"):
        coco_dataset([("v.tif", np.zeros((2, 3, 3), dtype=np.int32))])
