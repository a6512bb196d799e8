"""Synthetic cells, splitting, whole-image loading and the training patch dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import binary_masks, make_dataset

from unetkit.cli import main
from unetkit.data import (
    AugmentConfig,
    BorderWeightConfig,
    ClassInfo,
    DataError,
    NormalizeConfig,
    PatchDataset,
    check_dataset,
    detect_classes,
    find_samples,
    load_sample,
    make_synthetic_cells,
    normalize_image,
    split_samples,
    write_synthetic_dataset,
)
from unetkit.data.instances import three_class_from_instances


def test_synthetic_cells_reproducible_and_consistent():
    a = make_synthetic_cells(96, seed=3)
    b = make_synthetic_cells(96, seed=3)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, make_synthetic_cells(96, seed=4).image)
    assert a.image.shape == (1, 96, 96) and a.image.dtype == np.float32
    assert a.instances.max() >= 5
    np.testing.assert_array_equal(a.semantic, a.instances > 0)
    assert set(np.unique(a.three_class)) == {0, 1, 2}
    np.testing.assert_array_equal(a.three_class > 0, a.semantic == 1)
    # cells are brighter than background on average: the task is learnable
    assert a.image[0][a.semantic == 1].mean() > a.image[0][a.semantic == 0].mean() + 0.2
    vol = make_synthetic_cells(24, seed=0, dims=3, channels=2)
    assert vol.image.shape == (2, 24, 24, 24) and vol.instances.max() >= 1


def test_touching_cells_get_a_border_between_them():
    instances = np.zeros((10, 12), np.int32)
    instances[2:8, 1:6] = 1
    instances[2:8, 6:11] = 2
    three = three_class_from_instances(instances, border_width=2)
    assert np.all(three[4, 4:8] == 2)  # 2 px on each side of the contact line
    assert three[4, 2] == 2 and three[5, 3] == 1 and three[0, 0] == 0


def test_written_synthetic_dataset_checks_clean(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", 3, size=48, seed=1)
    report = check_dataset(root)
    assert report.ok, report.problems
    assert report.n_images == report.n_masks == report.n_instances == 3
    assert report.classes.encoding == "binary255"
    vol = write_synthetic_dataset(tmp_path / "syn3d", 2, size=16, seed=1, dims=3)
    report = check_dataset(vol)
    assert report.ok and report.dims == {3: 2}


def test_split_is_deterministic_and_disjoint(tmp_path):
    root = make_dataset(tmp_path / "ds", binary_masks(10, size=8))
    samples = find_samples(root)
    train, val = split_samples(samples, 0.2, seed=0)
    again = split_samples(list(reversed(samples)), 0.2, seed=0)
    assert (train, val) == again and len(val) == 2 and not set(map(str, train)) & set(map(str, val))
    assert split_samples(samples, 0.2, seed=1) != (train, val)
    train, val = split_samples(samples, 0.5, seed=0, val_names=["im_8", "im_9.png"])
    assert [s.name for s in val] == ["im_8", "im_9"] and len(train) == 8
    with pytest.raises(DataError, match="not in the dataset"):
        split_samples(samples, 0.0, 0, val_names=["nope"])


@pytest.mark.parametrize("mode", ("percentile", "zscore", "fixed"))
def test_normalisation_modes(mode):
    image = np.stack([np.linspace(0, 255, 1000), np.linspace(1000, 5000, 1000)]).reshape(2, 10, 100)
    out = normalize_image(image.astype(np.uint16), NormalizeConfig(mode=mode, low=0.0, high=100.0))
    assert out.dtype == np.float32 and out.shape == image.shape
    if mode == "percentile":
        np.testing.assert_allclose(out.reshape(2, -1).min(1), 0, atol=1e-6)
        np.testing.assert_allclose(out.reshape(2, -1).max(1), 1, atol=1e-6)
    elif mode == "zscore":
        np.testing.assert_allclose(out.reshape(2, -1).mean(1), 0, atol=1e-4)
    else:
        assert np.isclose(out[0].max(), 1.0)
    assert NormalizeConfig.from_dict(NormalizeConfig(mode=mode).to_dict()).mode == mode


def test_load_sample_whole_image(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", 1, size=40)
    [sample] = find_samples(root)
    image, labels = load_sample(sample, detect_classes([sample]), NormalizeConfig())
    assert image.shape == (1, 40, 40) and image.dtype == np.float32
    assert labels.shape == (40, 40) and labels.dtype == np.int64 and set(np.unique(labels)) <= {0, 1}


def test_patch_dataset_items(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", 2, size=64)
    samples = find_samples(root)
    ds = PatchDataset(samples, detect_classes(samples), patch_size=44, normalize=NormalizeConfig(),
                      augment=AugmentConfig.all_on(), weight_map=BorderWeightConfig(), output_size=20,
                      patches_per_epoch=5)
    assert len(ds) == 5
    item = ds[3]
    assert item["image"].shape == (1, 44, 44) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (20, 20) and item["mask"].dtype == torch.int64
    assert item["weight"].shape == (20, 20) and torch.all(item["weight"] > 0)
    assert torch.equal(ds[3]["image"], item["image"])  # seeded per (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["image"], item["image"])
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=1, persistent_workers=True)
    ds.set_epoch(0)
    first = next(iter(loader))["image"]
    assert first.shape == (5, 1, 44, 44) and torch.equal(first[3], item["image"])
    ds.set_epoch(1)
    assert torch.equal(next(iter(loader))["image"][3], ds[3]["image"])  # the worker saw the new epoch


def test_patch_dataset_three_class_small_images_and_oversampling(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", 1, size=24)
    samples = find_samples(root)
    ds = PatchDataset(samples, ClassInfo.binary(), patch_size=40, normalize=NormalizeConfig(),
                      target="three_class", foreground_oversample=1.0, patches_per_epoch=4)
    for i in range(4):
        mask = ds[i]["mask"]
        assert mask.shape == (40, 40) and set(mask.unique().tolist()) <= {0, 1, 2}
        assert (mask == 2).any()


def test_patch_dataset_3d_and_ignore(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn3d", 1, size=20, dims=3)
    samples = find_samples(root)
    ds = PatchDataset(samples, detect_classes(samples), patch_size=(8, 16, 16), normalize=NormalizeConfig(),
                      augment=AugmentConfig.all_on())
    item = ds[0]
    assert item["image"].shape == (1, 8, 16, 16) and item["mask"].shape == (8, 16, 16)
    masks = [np.array([[0, 1, 9, 9]] * 4, np.uint8)]
    ids_root = make_dataset(tmp_path / "ids", masks)
    classes = detect_classes(find_samples(ids_root), ignore_index=9)
    ds = PatchDataset(find_samples(ids_root), classes, patch_size=4, normalize=NormalizeConfig())
    assert set(ds[0]["mask"].unique().tolist()) == {0, 1, 9}


def test_patch_dataset_refuses_unlabelled_and_bad_masks(tmp_path):
    root = make_dataset(tmp_path / "ds", binary_masks(1))
    (root / "masks" / "im_0.png").unlink()
    with pytest.raises(DataError, match="no mask"):
        PatchDataset(find_samples(root), ClassInfo.binary(), patch_size=8, normalize=NormalizeConfig())
    masks = binary_masks(1)
    masks[0][0, 0] = 77
    root = make_dataset(tmp_path / "ds2", masks)
    ds = PatchDataset(find_samples(root), ClassInfo.binary(), patch_size=8, normalize=NormalizeConfig())
    with pytest.raises(DataError, match="im_0.png.*77"):
        ds[0]


def test_show_augmentations_writes_a_picture(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "syn", 1, size=48)
    out = tmp_path / "grid.png"
    assert main(["show-augmentations", str(root), "--out", str(out), "-n", "3", "--patch-size", "32"]) == 0
    assert out.stat().st_size > 1000
    assert main(["show-augmentations", str(tmp_path / "missing"), "--out", str(out)]) == 1
