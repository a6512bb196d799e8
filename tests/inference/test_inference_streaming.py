"""Big files: lazy TIFF reading and tile-by-tile prediction to a tiled TIFF."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from inference_helpers import make_run, tiny_unet

from unetkit.data.classes import ClassInfo
from unetkit.data.io import DataError, read_image
from unetkit.inference import Predictor
from unetkit.inference.streaming import TiffSource, rebuffer_bands
from unetkit.inference.tiling import read_mirrored


@pytest.mark.parametrize(
    "shape,options",
    [
        ((150, 210), {"tile": (32, 48), "compression": "zlib"}),
        ((150, 210), {"rowsperstrip": 7}),
        ((150, 210, 3), {"tile": (64, 64), "photometric": "rgb"}),
        ((150, 210, 3), {"photometric": "rgb", "compression": "zlib"}),
    ],
)
def test_tiff_source_reads_boxes_like_the_whole_image(tmp_path, shape, options):
    data = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, **options)
    full = data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)
    with TiffSource(tmp_path / "a.tif") as source:
        assert source.shape == full.shape
        assert np.array_equal(source.read((7, 33), (149, 200)), full[:, 7:149, 33:200])
        mirrored = read_mirrored(source, (-10, -4), (170, 220))
        assert np.array_equal(mirrored, np.pad(full, [(0, 0), (10, 10), (4, 6)], mode="reflect"))


def test_tiff_source_rejects_stacks_with_a_clear_message(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 20, 20), np.uint8), photometric="minisblack")
    with pytest.raises(DataError, match="stack.tif.*single-page"):
        TiffSource(tmp_path / "stack.tif")


def test_rebuffer_bands_recuts_rows():
    blocks = [(0, 5, np.zeros((1, 5, 4))), (5, 12, np.ones((1, 7, 4))), (12, 13, np.ones((1, 1, 4)))]
    bands = list(rebuffer_bands(iter(blocks), 13, band=4))
    assert [b.shape[1] for b in bands] == [4, 4, 4, 1]
    assert np.array_equal(np.concatenate(bands, axis=1), np.concatenate([b for _, _, b in blocks], axis=1))


def test_streamed_prediction_equals_in_memory_prediction(tmp_path):
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    predictor = Predictor.from_run(run, tile_size=64, batch_size=3, device="cpu")
    image = (np.random.default_rng(1).random((270, 150)) * 200).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image, tile=(64, 64))
    memory = predictor.predict_file(tmp_path / "in.tif", tmp_path / "m.png",
                                    probabilities=tmp_path / "m_prob.tif", stream=False)
    streamed = predictor.predict_file(tmp_path / "in.tif", tmp_path / "s.tif",
                                      probabilities=tmp_path / "s_prob.tif")
    assert streamed.labels is None, "a .tif destination streams"
    with tifffile.TiffFile(streamed.mask_path) as tif:
        assert tif.pages.first.is_tiled
    assert np.array_equal(read_image(memory.mask_path), read_image(streamed.mask_path))
    assert set(np.unique(read_image(streamed.mask_path))) <= {0, 255}
    np.testing.assert_allclose(read_image(tmp_path / "m_prob.tif"), read_image(tmp_path / "s_prob.tif"),
                               atol=1e-6)
    assert np.array_equal(memory.class_counts, streamed.class_counts)


def test_streamed_palette_mask_keeps_the_palette(tmp_path):
    classes = ClassInfo(["bg", "a", "b"], colors=[(0, 0, 0), (250, 0, 0), (0, 0, 250)], encoding="palette")
    run = make_run(tmp_path, tiny_unet(3, 3), classes)
    rgb = np.random.default_rng(2).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", tile=(32, 32))
    predictor = Predictor.from_run(run, tile_size=32, device="cpu")
    result = predictor.predict_file(tmp_path / "rgb.tif", tmp_path / "out.tif")
    with tifffile.TiffFile(result.mask_path) as tif:
        page = tif.pages.first
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        assert tuple(page.colormap[:, 1] // 257) == (250, 0, 0)
        ids = page.asarray()
    assert ids.shape == (90, 70) and ids.max() <= 2
    assert np.array_equal(np.bincount(ids.ravel(), minlength=3), result.class_counts)


def test_predict_file_never_writes_over_its_input(tmp_path):
    predictor = Predictor(tiny_unet(1, 2), device="cpu")
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.zeros((40, 40), np.uint8))
    before = src.read_bytes()
    with pytest.raises(ValueError, match="overwrite the input"):
        predictor.predict_file(src, src)
    assert src.read_bytes() == before
