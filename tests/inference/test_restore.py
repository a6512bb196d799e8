"""Restoration at prediction time: the Predictor's tiled restore, `unetkit predict` on a restoration run
(dtypes, scale, colour, errors) and `unetkit evaluate` (PSNR/SSIM on pairs or on degraded clean images).

The runs here hold a freshly built residual U-Net: its head starts at zero, so it is the identity
(or, with a scale, the bicubic upscale), and every output is known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from unetkit.checkpoint import save_model
from unetkit.cli import main
from unetkit.config import RestorationConfig, TrainConfig, save_config
from unetkit.data.degrade import upscale
from unetkit.data.io import read_image
from unetkit.data.normalize import NormalizeConfig
from unetkit.inference import Predictor
from unetkit.models import UNet

FIXED = NormalizeConfig(mode="fixed")


def identity_unet(channels: int = 1, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(channels, channels, depth=2, base_channels=4, padding="same", residual=True).eval()


def make_restoration_run(root: Path, *, mode: str = "denoise", scale: int = 1, channels: int = 1) -> Path:
    """A RUN folder as `unetkit train --task ...` writes it (model files and config.json, no classes)."""
    run = root / f"run-{mode}-{scale}"
    model = identity_unet(channels)
    save_model(model, run)
    config = TrainConfig(task="restoration", restoration=RestorationConfig(mode=mode, scale=scale))
    config.data.normalize = FIXED
    config.model = model.config
    save_config(config, run / "config.json")
    return run


def smooth(shape, seed: int = 0) -> np.ndarray:
    """A smooth random float image of ``shape`` on 20..220."""
    image = gaussian_filter(np.random.default_rng(seed).random(shape), 3)
    return 20 + 200 * (image - image.min()) / (image.max() - image.min())


def predict(run, *inputs, tile: int = 32) -> int:
    return main(["predict", str(run), *map(str, inputs), "--tile-size", str(tile)])


# --------------------------------------------------------------------------------------- the Predictor


def test_a_zero_head_residual_unet_restores_an_image_to_itself_across_tiles():
    predictor = Predictor(identity_unet(), task="restoration", normalize=FIXED, tile_size=32)
    plan, _ = predictor.plan((80, 96))
    assert len(plan) > 4  # several overlapping tiles are blended
    image = smooth((80, 96)).astype(np.float32)
    restored = predictor.restore(image)
    assert restored.shape == (1, 80, 96) and restored.dtype == np.float32
    np.testing.assert_allclose(restored[0], image, atol=1e-4)
    np.testing.assert_allclose(predictor.predict(image[None]), restored, atol=1e-6)


def test_restoring_with_a_scale_gives_the_bicubic_upscale():
    predictor = Predictor(identity_unet(), task="restoration", normalize=FIXED, tile_size=32, scale=2)
    image = smooth((40, 44)).astype(np.float32)
    restored = predictor.restore(image)
    assert restored.shape == (1, 80, 88)
    np.testing.assert_allclose(restored, upscale(image[None], 2), atol=1e-3)


def test_a_colour_image_through_a_grey_model_goes_by_the_luminance():
    predictor = Predictor(identity_unet(), task="restoration", normalize=FIXED, tile_size=32)
    image = np.stack([smooth((40, 48), s) for s in range(3)]).astype(np.float32)
    restored = predictor.restore(image)
    assert restored.shape == (3, 40, 48)
    np.testing.assert_allclose(restored, image, atol=1e-2)


# ----------------------------------------------------------------------------------- unetkit predict


@pytest.fixture
def run(tmp_path) -> Path:
    return make_restoration_run(tmp_path)


def test_uint8_png_in_uint8_png_out(run, tmp_path, capsys):
    image = smooth((40, 52)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert predict(run, tmp_path / "a.png", "--out", tmp_path / "out") == 0
    out = read_image(tmp_path / "out" / "a.png")
    assert out.dtype == np.uint8 and out.shape == (1, 40, 52)
    assert np.abs(out[0].astype(int) - image).max() <= 1
    assert "restored 1 file(s)" in capsys.readouterr().out
    # an existing output is kept unless --overwrite; test-time augmentation keeps the identity
    (tmp_path / "out" / "a.png").write_bytes(b"keep me")
    assert predict(run, tmp_path / "a.png", "--out", tmp_path / "out") == 0
    assert (tmp_path / "out" / "a.png").read_bytes() == b"keep me"
    assert "--overwrite" in capsys.readouterr().err
    assert predict(run, tmp_path / "a.png", "--out", tmp_path / "out", "--overwrite", "--tta") == 0
    assert np.abs(read_image(tmp_path / "out" / "a.png")[0].astype(int) - image).max() <= 1
    # the input is never overwritten
    before = (tmp_path / "a.png").read_bytes()
    assert predict(run, tmp_path / "a.png", "--out", tmp_path, "--overwrite") == 1
    assert (tmp_path / "a.png").read_bytes() == before


@pytest.mark.parametrize("name", ["grey16.png", "grey16.tif"])
def test_uint16_stays_uint16(run, tmp_path, capsys, name):
    image = (smooth((40, 52)) * 250).astype(np.uint16)  # up to 55000
    if name.endswith(".png"):
        Image.fromarray(image).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode == "I;16"
    else:
        tifffile.imwrite(tmp_path / name, image)
    code = predict(run, tmp_path / name, "--out", tmp_path / "out")
    assert code == 0, capsys.readouterr().out
    out = read_image(tmp_path / "out" / name)
    assert out.dtype == np.uint16 and out.shape == (1, 40, 52)
    assert np.abs(out[0].astype(int) - image).max() <= 2


def test_float_tiff_in_float_tiff_out_not_clipped(run, tmp_path):
    image = (smooth((40, 52)) * 3 - 200).astype(np.float32)  # -140 .. 460
    tifffile.imwrite(tmp_path / "f.tif", image)
    assert predict(run, tmp_path / "f.tif", "--out", tmp_path / "out") == 0
    out = read_image(tmp_path / "out" / "f.tif")
    assert out.dtype == np.float32 and out.shape == (1, 40, 52)
    assert out.min() < -100 and out.max() > 400
    np.testing.assert_allclose(out[0], image, atol=1e-3)


def test_float_option_writes_float32_tiffs(run, tmp_path):
    image = smooth((40, 52)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert predict(run, tmp_path / "a.png", "--out", tmp_path / "out", "--float") == 0
    assert not (tmp_path / "out" / "a.png").exists()
    out = tifffile.imread(tmp_path / "out" / "a.tif")
    assert out.dtype == np.float32 and out.shape == (40, 52)
    np.testing.assert_allclose(out, image, atol=1e-3)


def test_a_scale_2_run_doubles_the_size(tmp_path):
    run = make_restoration_run(tmp_path, mode="super_resolve", scale=2)
    image = smooth((20, 26)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "small.png")
    assert predict(run, tmp_path / "small.png", "--out", tmp_path / "out") == 0
    out = read_image(tmp_path / "out" / "small.png")
    assert out.dtype == np.uint8 and out.shape == (1, 40, 52)
    expected = np.clip(np.rint(upscale(image[None].astype(np.float32), 2)), 0, 255)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_a_colour_image_to_a_grey_model(run, tmp_path, capsys):
    image = np.stack([smooth((40, 52), s) for s in range(3)], axis=-1).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "rgb.png")
    assert predict(run, tmp_path / "rgb.png", "--out", tmp_path / "out") == 0
    assert "luminance" in capsys.readouterr().err
    out = read_image(tmp_path / "out" / "rgb.png")
    assert out.dtype == np.uint8 and out.shape == (3, 40, 52)
    assert np.abs(np.moveaxis(out, 0, -1).astype(int) - image).max() <= 1
    scaled = make_restoration_run(tmp_path, mode="super_resolve", scale=2)
    assert predict(scaled, tmp_path / "rgb.png", "--out", tmp_path / "out2") == 0
    assert read_image(tmp_path / "out2" / "rgb.png").shape == (3, 80, 104)


def test_a_grey_image_to_a_colour_model_fails_with_a_fix_that_works(tmp_path, capsys):
    run = make_restoration_run(tmp_path, channels=3)
    image = smooth((40, 52)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([image] * 3, axis=-1)).save(tmp_path / "rgb.png")
    assert predict(run, tmp_path / "grey.png", tmp_path / "rgb.png", "--out", tmp_path / "out") == 1
    out = capsys.readouterr().out
    assert "grey.png" in out and "expects 3" in out and "restored 1 file(s)" in out
    assert read_image(tmp_path / "out" / "rgb.png").shape == (3, 40, 52)
    if "--channels rgb" in out:  # the fix the message names must be one a restoration run takes
        assert predict(run, tmp_path / "grey.png", "--out", tmp_path / "out2", "--channels", "rgb") == 0, (
            capsys.readouterr().err
        )


def test_segmentation_options_are_refused(run, tmp_path, capsys):
    Image.fromarray(smooth((40, 52)).astype(np.uint8)).save(tmp_path / "a.png")
    assert predict(run, tmp_path / "a.png", "--out", tmp_path / "out", "--instances") == 2
    assert "--instances" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a.png").exists()


def test_a_corrupt_file_among_good_ones(run, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(smooth((40, 52)).astype(np.uint8)).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    assert predict(run, folder, "--out", tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.out and "failed 1" in captured.out
    assert "restored 2 file(s)" in captured.out
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "b.png").is_file()
    assert not (tmp_path / "out" / "broken.png").exists()


# ---------------------------------------------------------------------------------- unetkit evaluate


def test_evaluate_on_pairs(run, tmp_path, capsys):
    data = tmp_path / "pairs"
    rng = np.random.default_rng(0)
    for sub in ("inputs", "targets"):
        (data / sub).mkdir(parents=True)
    for i in range(3):
        clean = smooth((48, 48), i)
        noisy = np.clip(clean + rng.normal(0, 10, clean.shape), 0, 255)
        Image.fromarray(clean.astype(np.uint8)).save(data / "targets" / f"{i}.png")
        Image.fromarray(noisy.astype(np.uint8)).save(data / "inputs" / f"{i}.png")
    report = tmp_path / "report"
    assert main(["evaluate", str(run), str(data), "--out", str(report)]) == 0
    assert "psnr" in capsys.readouterr().out
    summary = json.loads((report / "summary.json").read_text())
    assert summary["num_images"] == 3
    assert {"psnr", "ssim", "psnr_input"} <= set(summary)
    assert 25 < summary["psnr"] < 35 and 0 < summary["ssim"] < 1
    assert summary["psnr"] == pytest.approx(summary["psnr_input"], abs=0.05)  # the identity restores nothing
    text = (report / "report.md").read_text()
    assert "psnr" in text and "crops/" in text
    assert len(list((report / "crops").glob("*.png"))) == 3
    assert len(list((report / "restored").glob("*.tif"))) == 3
    assert len((report / "per_image.csv").read_text().splitlines()) == 4


def test_evaluate_clean_images_with_another_noise(run, tmp_path):
    data = tmp_path / "clean"
    data.mkdir()
    for i in range(2):
        Image.fromarray(smooth((48, 48), i).astype(np.uint8)).save(data / f"{i}.png")
    evaluate = ["evaluate", str(run), str(data), "--out"]
    assert main([*evaluate, str(tmp_path / "own")]) == 0
    own = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert main([*evaluate, str(tmp_path / "r15"), "--noise", "gaussian:15"]) == 0
    other = json.loads((tmp_path / "r15" / "summary.json").read_text())
    # the run's own noise is gaussian:25 (about 20.2 dB); gaussian:15 is about 24.6 dB
    assert own["psnr_input"] == pytest.approx(20 * np.log10(255 / 25), abs=1.0)
    assert other["psnr_input"] == pytest.approx(20 * np.log10(255 / 15), abs=1.0)
    assert "gaussian:15" in other["task"]
    assert main([*evaluate, str(tmp_path / "bad"), "--noise", "pepper"]) == 2


def test_evaluate_a_scale_2_run_on_pairs_and_on_clean_colour_images(tmp_path):
    run = make_restoration_run(tmp_path, mode="super_resolve", scale=2)
    pairs = tmp_path / "pairs"
    for sub in ("inputs", "targets"):
        (pairs / sub).mkdir(parents=True)
    for i in range(2):
        target = smooth((48, 48), i).astype(np.float32)
        small = np.asarray(Image.fromarray(target).resize((24, 24), Image.Resampling.BICUBIC))
        Image.fromarray(target.astype(np.uint8)).save(pairs / "targets" / f"{i}.png")
        Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).save(pairs / "inputs" / f"{i}.png")
    assert main(["evaluate", str(run), str(pairs), "--out", str(tmp_path / "r1")]) == 0
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["psnr"] == pytest.approx(summary["psnr_input"], abs=0.05)  # the bicubic upscale
    assert read_image(tmp_path / "r1" / "restored" / "0.tif").shape == (1, 48, 48)

    colour = tmp_path / "colour"
    colour.mkdir()
    for i in range(2):  # odd sizes: cropped to a multiple of the scale
        image = np.stack([smooth((49, 50), 3 * i + c) for c in range(3)], axis=-1).astype(np.uint8)
        Image.fromarray(image).save(colour / f"c{i}.png")
    assert main(["evaluate", str(run), str(colour), "--out", str(tmp_path / "r2")]) == 0
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert summary["num_images"] == 2 and summary["psnr"] > 25
    assert summary["psnr"] == pytest.approx(summary["psnr_input"], abs=0.1)
    assert read_image(tmp_path / "r2" / "restored" / "c0.tif").shape == (3, 48, 50)
    assert "luminance" in (tmp_path / "r2" / "report.md").read_text()


@pytest.mark.parametrize("mode", ["noise2void", "neighbor2neighbor"])
def test_evaluate_a_self_supervised_run_on_noisy_images(tmp_path, mode):
    run = make_restoration_run(tmp_path, mode=mode)
    data = tmp_path / "noisy"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        noisy = np.clip(smooth((48, 48), i) + rng.normal(0, 20, (48, 48)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(data / f"{i}.png")
    assert main(["evaluate", str(run), str(data), "--out", str(tmp_path / "report"), "--tta"]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert "psnr" not in summary and summary["val_loss"] > 0 and summary["tta"] is True
    assert len(list((tmp_path / "report" / "crops").glob("*.png"))) == 2
