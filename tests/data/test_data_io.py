"""Reading every supported 2D/3D format channel-first, and clear errors for broken files."""

from __future__ import annotations

import nibabel
import numpy as np
import pytest
import tifffile
from data_helpers import save_png, save_tif
from PIL import Image

from unetkit.data.io import DataError, is_volume_path, list_images, read_image, read_label_image, stem_of

RNG = np.random.default_rng(1)


@pytest.mark.parametrize("suffix", (".png", ".bmp", ".tif"))
def test_grey_8bit_round_trip(tmp_path, suffix):
    data = RNG.integers(0, 256, size=(12, 17), dtype=np.uint8)
    path = tmp_path / f"a{suffix}"
    Image.fromarray(data).save(path)
    image = read_image(path)
    assert image.shape == (1, 12, 17) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0], data)
    assert not is_volume_path(path)


def test_png_16bit_keeps_values(tmp_path):
    data = RNG.integers(0, 65535, size=(9, 11), dtype=np.uint16)
    image = read_image(save_png(tmp_path / "a.png", data))
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image[0], data)


def test_rgb_png_and_opaque_alpha_dropped(tmp_path):
    rgb = RNG.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((8, 10, 1), 255, np.uint8)], axis=-1)
    image = read_image(save_png(tmp_path / "a.png", rgba))
    assert image.shape == (3, 8, 10)
    np.testing.assert_array_equal(np.moveaxis(image, 0, -1), rgb)
    rgba[0, 0, 3] = 10  # real transparency is data: kept
    assert read_image(save_png(tmp_path / "b.png", rgba)).shape == (4, 8, 10)


def test_jpeg_reads_close_to_original(tmp_path):
    data = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (16, 1))
    Image.fromarray(data).save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == (1, 16, 32)
    assert np.abs(image[0].astype(int) - data).max() < 10


@pytest.mark.parametrize("dtype", (np.uint16, np.float32))
def test_tiff_dtypes(tmp_path, dtype):
    data = (RNG.random((10, 12)) * 1000).astype(dtype)
    image = read_image(save_tif(tmp_path / "a.tif", data))
    assert image.dtype == dtype
    np.testing.assert_array_equal(image[0], data)


def test_multiband_tiff_channels(tmp_path):
    bands = RNG.integers(0, 4000, size=(6, 10, 12), dtype=np.uint16)  # planar, e.g. a satellite raster
    image = read_image(save_tif(tmp_path / "a.tif", bands, photometric="minisblack", planarconfig="separate"))
    assert image.shape == (6, 10, 12)
    np.testing.assert_array_equal(image, bands)
    rgb = RNG.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)  # interleaved RGB
    np.testing.assert_array_equal(read_image(save_tif(tmp_path / "b.tif", rgb, photometric="rgb")),
                                  np.moveaxis(rgb, -1, 0))


def test_tiff_stack_is_a_volume_unless_pages_are_channels(tmp_path):
    stack = RNG.integers(0, 256, size=(5, 8, 9), dtype=np.uint8)
    path = save_tif(tmp_path / "stack.tif", stack)
    assert is_volume_path(path)
    volume = read_image(path)
    assert volume.shape == (1, 5, 8, 9)
    np.testing.assert_array_equal(volume[0], stack)
    channels = read_image(path, pages_as_channels=True)
    assert channels.shape == (5, 8, 9)
    np.testing.assert_array_equal(read_label_image(path), stack)


def test_imagej_hyperstack_with_channels(tmp_path):
    data = RNG.integers(0, 256, size=(4, 2, 8, 9), dtype=np.uint8)  # Z, C, Y, X
    path = save_tif(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    image = read_image(path)
    assert image.shape == (2, 4, 8, 9)
    np.testing.assert_array_equal(image[1], data[:, 1])


def test_one_page_stack_is_a_2d_image(tmp_path):
    """A grey image saved as a ``(1, H, W)`` array (tifffile: axes QYX) is 2D, as its mask reads."""
    image = RNG.random((1, 8, 9), dtype=np.float32)
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, image)
    assert not is_volume_path(path)
    np.testing.assert_array_equal(read_image(path), image)
    stack = tmp_path / "two.tif"
    tifffile.imwrite(stack, np.concatenate([image, image]))
    assert is_volume_path(stack) and read_image(stack).shape == (1, 2, 8, 9)


def test_ome_tiff_axes_decide_channels_and_depth(tmp_path):
    channels = RNG.integers(0, 256, size=(3, 8, 9), dtype=np.uint8)
    path = tmp_path / "c.ome.tif"
    tifffile.imwrite(path, channels, ome=True, metadata={"axes": "CYX"})
    assert not is_volume_path(path)
    np.testing.assert_array_equal(read_image(path), channels)
    stack = RNG.integers(0, 256, size=(4, 2, 8, 9), dtype=np.uint16)  # Z, C, Y, X
    path = tmp_path / "zc.ome.tiff"
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "ZCYX"})
    assert is_volume_path(path)
    image = read_image(path)
    assert image.shape == (2, 4, 8, 9) and image.dtype == np.uint16
    np.testing.assert_array_equal(image[1], stack[:, 1])


@pytest.mark.parametrize("suffix", (".nii", ".nii.gz"))
def test_nifti_volume_reordered_to_dhw(tmp_path, suffix):
    zyx = RNG.integers(0, 100, size=(4, 6, 7)).astype(np.int16)
    path = tmp_path / f"v{suffix}"
    nibabel.save(nibabel.Nifti1Image(np.transpose(zyx, (2, 1, 0)), np.eye(4)), str(path))
    assert is_volume_path(path) and stem_of(path) == "v"
    image = read_image(path)
    assert image.shape == (1, 4, 6, 7)
    np.testing.assert_array_equal(image[0], zyx)
    np.testing.assert_array_equal(read_label_image(path), zyx)


def test_palette_mask_gives_indices_and_rgb_mask_gives_colours(tmp_path):
    idx = RNG.integers(0, 4, size=(6, 8), dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "p.png"), idx)
    assert read_image(tmp_path / "p.png").shape == (3, 6, 8)  # an image in palette mode is shown in colour
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[2:4, 2:4] = (255, 0, 0)
    assert read_label_image(save_png(tmp_path / "rgb.png", rgb)).shape == (6, 8, 3)


def test_float_labels_must_be_whole_numbers(tmp_path):
    labels = np.zeros((4, 4), np.float32)
    labels[1, 1] = 2.0
    assert read_label_image(save_tif(tmp_path / "ok.tif", labels)).dtype == np.int64
    labels[0, 0] = 0.5
    with pytest.raises(DataError, match="fractional"):
        read_label_image(save_tif(tmp_path / "bad.tif", labels))
    labels[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        read_label_image(save_tif(tmp_path / "nan.tif", labels))


def test_truncated_file_names_file_and_fix(tmp_path):
    path = save_png(tmp_path / "t.png", RNG.integers(0, 256, size=(64, 64), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(path) in str(info.value) and "re-" in str(info.value)


@pytest.mark.parametrize("content", (b"", b"this is not an image"))
def test_unreadable_and_empty_files(tmp_path, content):
    path = tmp_path / "x.tif"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_label_image(path)
    assert str(path) in str(info.value)
    if not content:
        assert "empty (0 bytes)" in str(info.value)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "none.png")
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataError, match="unsupported file type"):
        read_image(tmp_path / "a.gif")


@pytest.mark.filterwarnings("ignore:.*zero-size array")
def test_image_without_pixels(tmp_path):
    path = tmp_path / "e.tif"
    tifffile.imwrite(path, np.zeros((0, 5), np.uint8))
    with pytest.raises(DataError, match="empty|no pixels"):
        read_image(path)


def test_list_images_sorted_and_skips_other_files(tmp_path):
    for name in ("b.png", "a.tif", ".hidden.png", "notes.txt", "c.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.tif", "b.png", "c.nii.gz"]
