"""`unetkit predict RUN INPUT... --out DIR` end to end on tiny RUN folders."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from inference_helpers import make_run, tiny_unet
from PIL import Image

from unetkit.cli import main
from unetkit.data.classes import ClassInfo
from unetkit.data.io import read_image


@pytest.fixture
def folder(tmp_path):
    """Two grey PNGs, one RGB PNG (wrong channels for a grey model) and one broken file."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray((rng.random((40, 52)) * 255).astype(np.uint8)).save(images / f"{name}.png")
    Image.fromarray((rng.random((40, 52, 3)) * 255).astype(np.uint8)).save(images / "colour.png")
    (images / "broken.png").write_bytes(b"not an image")
    return images


def run_cli(*args) -> int:
    return main(["predict", *map(str, args), "--tile-size", "32"])


def test_bad_files_are_reported_and_skipped(tmp_path, folder, capsys):
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    out = tmp_path / "out"
    code = run_cli(run, folder, "--out", out, "--save-probabilities", "--overlay")
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png" in captured.out and "colour.png" in captured.out
    assert "expects 1" in captured.out and "--channels gray" in captured.out
    assert "predicted 2 file(s)" in captured.out and "failed 2" in captured.out
    assert "foreground" in captured.out and "%" in captured.out
    mask = read_image(out / "a.png")
    assert mask.shape == (1, 40, 52) and set(np.unique(mask)) <= {0, 255}
    assert read_image(out / "a_prob.tif").shape == (2, 40, 52)
    assert np.asarray(Image.open(out / "b_overlay.png")).shape == (40, 52, 3)
    assert not (out / "colour.png").exists() and not (out / "broken.png").exists()


def test_channels_option_converts_colour_images(tmp_path, folder):
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    assert run_cli(run, folder / "colour.png", "--out", tmp_path / "out", "--channels", "gray") == 0
    assert read_image(tmp_path / "out" / "colour.png").shape == (1, 40, 52)


def test_globs_and_existing_outputs(tmp_path, folder, capsys):
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    out = tmp_path / "out"
    assert run_cli(run, folder / "[ab].png", "--out", out) == 0
    (out / "a.png").write_bytes(b"keep me")
    assert run_cli(run, folder / "a.png", "--out", out) == 0
    assert (out / "a.png").read_bytes() == b"keep me"
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli(run, folder / "a.png", "--out", out, "--overwrite") == 0
    assert read_image(out / "a.png").shape == (1, 40, 52)
    assert run_cli(run, tmp_path / "nothing*.png", "--out", out) == 1


def test_inputs_are_never_overwritten(tmp_path, folder):
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    before = (folder / "a.png").read_bytes()
    assert run_cli(run, folder / "a.png", "--out", folder, "--overwrite") == 1
    assert (folder / "a.png").read_bytes() == before


def test_masks_use_the_training_encoding(tmp_path, folder):
    colors = [(0, 0, 0), (200, 10, 10), (10, 10, 200)]
    run = make_run(tmp_path, tiny_unet(1, 3), ClassInfo(["bg", "x", "y"], colors, encoding="palette"))
    assert run_cli(run, folder / "a.png", "--out", tmp_path / "pal") == 0
    saved = Image.open(tmp_path / "pal" / "a.png")
    assert saved.mode == "P" and saved.getpalette()[:9] == [v for c in colors for v in c]
    assert np.asarray(saved).max() <= 2

    rgb_run = make_run(tmp_path / "r", tiny_unet(1, 3), ClassInfo(["bg", "x", "y"], colors, encoding="rgb"))
    assert run_cli(rgb_run, folder / "a.png", "--out", tmp_path / "rgb") == 0
    pixels = np.asarray(Image.open(tmp_path / "rgb" / "a.png")).reshape(-1, 3)
    assert {tuple(p) for p in np.unique(pixels, axis=0)} <= set(colors)


def test_volumes_give_tiff_masks(tmp_path):
    run = make_run(tmp_path, tiny_unet(1, 2, dims=3, depth=1), ClassInfo.binary())
    tifffile.imwrite(tmp_path / "vol.tif", np.random.default_rng(1).random((6, 20, 18)).astype(np.float32))
    assert main(["predict", str(run), str(tmp_path / "vol.tif"), "--out", str(tmp_path / "out"),
                 "--tile-size", "16", "--overlay"]) == 0
    assert read_image(tmp_path / "out" / "vol.tif").shape == (1, 6, 20, 18)
    assert (tmp_path / "out" / "vol_overlay.png").exists()


def test_missing_run_folder_is_an_error(tmp_path, folder, capsys):
    assert run_cli(tmp_path / "nope", folder, "--out", tmp_path / "out") == 2
    assert "RUN folder" in capsys.readouterr().err
