"""Restoration datasets: pairing by name, the pair checks, and the training patches of each mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from unetkit.cli import main
from unetkit.data.degrade import downscale, parse_noise, upscale
from unetkit.data.io import DataError
from unetkit.data.normalize import NormalizeConfig
from unetkit.data.pairs import ImagePair, check_image_pairs, find_image_pairs
from unetkit.data.restoration_patches import RestorationPatchDataset

FIXED = NormalizeConfig(mode="fixed")


def smooth(shape, seed=0, low=20.0, high=220.0) -> np.ndarray:
    """A smooth random uint8 image of ``shape`` (H, W) or (H, W, 3) on [low, high]."""
    rng = np.random.default_rng(seed)
    image = gaussian_filter(rng.random(shape), sigma=(3, 3, 0)[: len(shape)])
    image = (image - image.min()) / (image.max() - image.min())
    return (low + image * (high - low)).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_tif(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


def pair(root: Path, name: str, image: np.ndarray, target: np.ndarray) -> ImagePair:
    return ImagePair(
        save_png(root / "inputs" / f"{name}.png", image), save_png(root / "targets" / f"{name}.png", target)
    )


# ------------------------------------------------------------------------------ finding the images


def test_pairs_are_matched_by_stem_and_sorted(tmp_path):
    for name in ("b", "a"):
        save_png(tmp_path / "inputs" / f"{name}.png", smooth((16, 16)))
    save_tif(tmp_path / "targets" / "a.tif", smooth((16, 16)))  # another format, same stem
    save_png(tmp_path / "targets" / "b.png", smooth((16, 16)))
    pairs = find_image_pairs(tmp_path)
    assert [p.name for p in pairs] == ["a", "b"]
    assert pairs[0].image.name == "a.png" and pairs[0].target.name == "a.tif"
    assert pairs[1].target == tmp_path / "targets" / "b.png"


def test_every_unmatched_file_is_named_in_one_error(tmp_path):
    for name in ("a", "b", "c"):
        save_png(tmp_path / "inputs" / f"{name}.png", smooth((16, 16)))
    for name in ("a", "d"):
        save_png(tmp_path / "targets" / f"{name}.png", smooth((16, 16)))
    with pytest.raises(DataError) as info:
        find_image_pairs(tmp_path)
    message = str(info.value)
    assert "b.png" in message and "c.png" in message and "d.png" in message
    assert "a.png" not in message
    assert "no target named b" in message and "no input named d" in message


@pytest.mark.parametrize("sub", ["images", ""])
def test_folders_of_images_only(tmp_path, sub):
    folder = tmp_path / sub if sub else tmp_path
    for name in ("y", "x"):
        save_png(folder / f"{name}.png", smooth((16, 16)))
    pairs = find_image_pairs(tmp_path)
    assert [p.name for p in pairs] == ["x", "y"]
    assert all(p.target is None for p in pairs)
    assert pairs[0].image == folder / "x.png"


def test_missing_or_empty_folders_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        find_image_pairs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        find_image_pairs(tmp_path / "empty")


# ------------------------------------------------------------------------------- checking the pairs


def test_the_scale_is_inferred_from_2x_targets(tmp_path):
    pairs = [pair(tmp_path, n, smooth((16, 20), i), smooth((32, 40), i)) for i, n in enumerate("ab")]
    assert check_image_pairs(pairs) == 2
    assert check_image_pairs(pairs, 2) == 2
    same = [pair(tmp_path / "same", "a", smooth((16, 16)), smooth((16, 16)))]
    assert check_image_pairs(same) == 1


def test_a_target_of_the_wrong_size_is_refused_with_the_expected_size(tmp_path):
    pairs = [
        pair(tmp_path, "a", smooth((16, 16)), smooth((32, 32))),
        pair(tmp_path, "b", smooth((16, 20)), smooth((32, 44))),
    ]
    with pytest.raises(DataError) as info:
        check_image_pairs(pairs)
    message = str(info.value)
    assert str(tmp_path / "targets" / "b.png") in message
    assert "(32, 40)" in message and "scale 2" in message
    assert str(tmp_path / "targets" / "a.png") not in message  # only the bad pair is reported
    with pytest.raises(DataError, match=r"should be \(48, 48\)"):
        check_image_pairs(pairs[:1], 3)


def test_channels_of_input_and_target_must_agree(tmp_path):
    bad = pair(tmp_path, "c", smooth((16, 16)), smooth((16, 16, 3)))
    with pytest.raises(DataError) as info:
        check_image_pairs([bad])
    message = str(info.value)
    assert str(bad.target) in message and "3 channel(s)" in message and "same channels" in message


def test_nan_in_a_float_tiff_is_refused(tmp_path):
    image = np.ones((16, 16), np.float32)
    image[3, 4] = np.nan
    bad = ImagePair(save_tif(tmp_path / "images" / "nan.tif", image))
    good = ImagePair(save_tif(tmp_path / "images" / "ok.tif", np.ones((16, 16), np.float32)))
    with pytest.raises(DataError) as info:
        check_image_pairs([good, bad])
    assert "nan.tif" in str(info.value) and "NaN" in str(info.value)
    target = ImagePair(good.image, bad.image)  # NaN in a target too
    with pytest.raises(DataError, match="NaN"):
        check_image_pairs([target])


def test_grey_and_colour_images_mix_only_when_allowed(tmp_path):
    images = [
        ImagePair(save_png(tmp_path / "grey.png", smooth((16, 16)))),
        ImagePair(save_png(tmp_path / "colour.png", smooth((16, 16, 3)))),
    ]
    with pytest.raises(DataError, match="colour.png"):
        check_image_pairs(images)
    assert check_image_pairs(images, same_channels=False) == 1


def test_check_data_command_on_pairs(tmp_path, capsys):
    pair(tmp_path / "good", "a", smooth((16, 16)), smooth((32, 32)))
    assert main(["check-data", str(tmp_path / "good")]) == 0
    assert "targets x2" in capsys.readouterr().out
    pair(tmp_path / "bad", "a", smooth((16, 16)), smooth((32, 32)))
    save_png(tmp_path / "bad" / "inputs" / "lonely.png", smooth((16, 16)))
    assert main(["check-data", str(tmp_path / "bad")]) == 1
    assert "lonely.png" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- training patches


@pytest.fixture
def clean(tmp_path) -> list[ImagePair]:
    return [ImagePair(save_png(tmp_path / "clean" / f"{i}.png", smooth((64, 64), i))) for i in range(3)]


def dataset(pairs, mode, **kwargs) -> RestorationPatchDataset:
    options = dict(patch_size=32, normalize=FIXED, seed=0, patches_per_epoch=12)
    if mode == "denoise":
        options["noise"] = parse_noise("gaussian:25")
    if mode == "super_resolve":
        options["scale"] = 2
    options.update(kwargs)
    return RestorationPatchDataset(pairs, mode=mode, **options)


def test_neighbor2neighbor_items_are_the_noisy_patch_and_two_neighbour_subimages(clean):
    ds = dataset(clean, "neighbor2neighbor")
    item = ds[5]
    assert set(item) == {"image", "sub_a", "sub_b"}
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["sub_a"].shape == item["sub_b"].shape == (16, 16) and item["sub_a"].dtype == torch.int64
    ya, xa = np.unravel_index(item["sub_a"].numpy(), (32, 32))
    yb, xb = np.unravel_index(item["sub_b"].numpy(), (32, 32))
    assert np.all(np.abs(ya - yb) + np.abs(xa - xb) == 1)
    assert torch.equal(ds[5]["sub_a"], item["sub_a"])  # seeded per (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["sub_a"], item["sub_a"])
    with pytest.raises(ValueError, match="even"):
        dataset(clean, "neighbor2neighbor", patch_size=33)


@pytest.mark.parametrize("mode", ["pairs", "denoise", "super_resolve", "noise2void"])
def test_items_of_each_mode(tmp_path, clean, mode):
    pairs = clean
    if mode == "pairs":
        pairs = [pair(tmp_path, str(i), smooth((64, 64), i), smooth((64, 64), i + 10)) for i in range(3)]
    ds = dataset(pairs, mode)
    assert len(ds) == 12
    item = ds[4]
    keys = {"image", "target", "mask"} if mode == "noise2void" else {"image", "target"}
    assert set(item) == keys
    assert item["image"].shape == item["target"].shape == (1, 32, 32)
    assert item["image"].dtype == item["target"].dtype == torch.float32
    if mode == "noise2void":
        assert item["mask"].shape == (32, 32) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    # the fixed 0-255 normalisation: clean values of 20..220 land in about 0.08..0.86
    assert 0.0 <= float(item["target"].min()) and float(item["target"].max()) <= 1.0
    with pytest.raises(IndexError):
        ds[12]


def test_colour_items_keep_three_channels(tmp_path):
    pairs = [ImagePair(save_png(tmp_path / "rgb.png", smooth((48, 48, 3))))]
    item = dataset(pairs, "denoise")[0]
    assert item["image"].shape == item["target"].shape == (3, 32, 32)


def test_denoise_adds_the_noise_fresh_each_epoch_but_seeded(clean):
    ds = dataset(clean, "denoise")
    residual = np.concatenate([(ds[i]["image"] - ds[i]["target"]).numpy().ravel() for i in range(len(ds))])
    assert residual.std() == pytest.approx(25 / 255, rel=0.05)
    assert abs(residual.mean()) < 0.01
    first = ds[0]
    again = ds[0]
    assert np.array_equal(first["image"], again["image"]) and np.array_equal(first["target"], again["target"])
    twin = dataset(clean, "denoise")
    assert np.array_equal(twin[0]["image"], first["image"])
    ds.set_epoch(1)
    later = ds[0]
    assert not np.array_equal(later["image"], first["image"])
    ds.set_epoch(0)
    assert np.array_equal(ds[0]["image"], first["image"])
    other_seed = dataset(clean, "denoise", seed=1)
    assert not np.array_equal(other_seed[0]["image"], first["image"])


def test_super_resolution_input_is_the_bicubic_round_trip_of_the_target(clean):
    ds = dataset(clean, "super_resolve")
    for i in range(3):
        item = ds[i]
        target = item["target"].numpy()
        expected = upscale(downscale(target, 2), 2)
        np.testing.assert_allclose(item["image"].numpy(), expected, atol=1e-4)
        assert not np.allclose(item["image"].numpy(), target, atol=1e-3)  # it is degraded


def test_super_resolution_patch_must_be_a_multiple_of_the_scale(clean):
    with pytest.raises(ValueError, match="divides the patch size"):
        dataset(clean, "super_resolve", patch_size=33)


def test_noise2void_masks_about_the_fraction_and_changes_only_masked_pixels(tmp_path):
    rng = np.random.default_rng(0)
    noisy = [ImagePair(save_png(tmp_path / f"n{i}.png", rng.integers(0, 256, (64, 64), dtype=np.uint8)))
             for i in range(2)]
    ds = dataset(noisy, "noise2void", blind_spot=(0.05, 2, "uniform"))
    masked = changed = 0
    for i in range(len(ds)):
        item = ds[i]
        mask = item["mask"].numpy().astype(bool)
        differs = (item["image"] != item["target"]).numpy()[0]
        assert not (differs & ~mask).any()
        masked += mask.sum()
        changed += differs.sum()
    fraction = masked / (len(ds) * 32 * 32)
    assert fraction == pytest.approx(0.05, rel=0.2)
    assert changed > 0.8 * masked  # random neighbours of random pixels almost always differ


def test_pairs_with_2x_targets_upscale_the_input_to_the_target(tmp_path):
    small, big = smooth((16, 16), 1), smooth((32, 32), 2)
    pairs = [pair(tmp_path, "a", small, big)]
    ds = dataset(pairs, "pairs", augment=False, patches_per_epoch=2)
    item = ds[0]
    assert item["image"].shape == item["target"].shape == (1, 32, 32)
    expected = upscale(small[None].astype(np.float32), 2) / 255.0
    np.testing.assert_allclose(item["image"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(item["target"].numpy(), big[None] / 255.0, atol=1e-6)
    cropped = dataset(pairs, "pairs", patch_size=16)[1]
    assert cropped["image"].shape == (1, 16, 16)


def test_a_patch_larger_than_an_image_names_the_file(tmp_path, clean):
    tiny = ImagePair(save_png(tmp_path / "tiny.png", smooth((20, 24))))
    ds = dataset([*clean, tiny], "denoise")
    with pytest.raises(DataError) as info:
        ds[3]
    assert "tiny.png" in str(info.value) and "patch" in str(info.value)


@pytest.mark.parametrize("mode", ["denoise", "noise2void"])
def test_volumes_give_cubic_patches(tmp_path, mode):
    volume = (np.random.default_rng(0).random((20, 32, 32)) * 255).astype(np.uint8)
    pairs = [ImagePair(save_tif(tmp_path / "vol.tif", volume))]
    ds = dataset(pairs, mode, patch_size=16, blind_spot=(0.01, 2, "uniform"))
    item = ds[0]
    assert item["image"].shape == item["target"].shape == (1, 16, 16, 16)
    if mode == "noise2void":
        mask = item["mask"].numpy().astype(bool)
        assert mask.shape == (16, 16, 16) and mask.any()
        assert not ((item["image"] != item["target"]).numpy()[0] & ~mask).any()


def test_volumes_give_neighbour_subvolumes(tmp_path):
    volume = (np.random.default_rng(0).random((20, 32, 32)) * 255).astype(np.uint8)
    ds = dataset([ImagePair(save_tif(tmp_path / "vol.tif", volume))], "neighbor2neighbor", patch_size=16)
    item = ds[0]
    assert item["image"].shape == (1, 16, 16, 16) and item["sub_a"].shape == item["sub_b"].shape == (8, 8, 8)
    a = np.unravel_index(item["sub_a"].numpy(), (16, 16, 16))
    b = np.unravel_index(item["sub_b"].numpy(), (16, 16, 16))
    assert np.all(sum(np.abs(a[k] - b[k]) for k in range(3)) == 1)
