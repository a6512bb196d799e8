"""The generation task end to end on tiny data: training, resume, sampling, cascades, masks, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unetkit.cli import main
from unetkit.config import TrainConfig, apply_overrides
from unetkit.data.generation import (
    GenerationPatchDataset,
    LoadedImage,
    find_generation_images,
    from_unit_range,
    intensity_range,
    low_res_condition,
    to_unit_range,
)
from unetkit.data.io import DataError
from unetkit.inference.generate import DiffusionSampler, check_cascade
from unetkit.models.diffusion import DiffusionUNet
from unetkit.training.run import Run

TINY = [
    "--generation.network.base-channels", "8", "--generation.network.channel-mults", "1,2",
    "--generation.network.num-res-blocks", "1", "--generation.network.groups", "4",
    "--data.patches-per-epoch", "16", "--data.batch-size", "8", "--budget.epochs", "1", "--threads", "1",
    "--generation.sample-steps", "2", "--no-progress",
]


def bars(root: Path, n: int = 6, size: int = 8, dtype=np.uint8) -> Path:
    """Two classes of ``size`` x ``size`` images: a horizontal or a vertical bright bar."""
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    for name in ("horizontal", "vertical"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = np.zeros((size, size), dtype)
            k = int(rng.integers(1, size - 1))
            if name == "horizontal":
                image[k] = top
            else:
                image[:, k] = top
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root


def masks_dataset(root: Path, n: int = 4, size: int = 16) -> Path:
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        mask[4:12, int(rng.integers(0, 8)):][:, :6] = 255
        image = np.clip(mask * 0.6 + rng.normal(40, 10, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i}.png")
    return root


def train_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["train", str(data), "--task", "generate", "--out", str(out), *TINY, *extra])


def super_resolution_run(tmp_path: Path) -> tuple[Path, Path]:
    """Three random 16x16 high-resolution images and a x2 low-res-conditioned run trained on them."""
    rng = np.random.default_rng(0)
    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(hr / f"{i}.png")
    sr = tmp_path / "sr"
    assert train_cli(hr, sr, "--condition", "low-res", "--scale", "2", "--data.patch-size", "8") == 0
    return hr, sr


@pytest.fixture(scope="module")
def class_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("generation")
    data = bars(root / "bars")
    assert train_cli(data, root / "run") == 0
    return root / "run"


# ------------------------------------------------------------------------------------------- training
def test_a_class_conditional_run_records_its_classes_intensity_and_network(class_run):
    config = json.loads((class_run / "config.json").read_text())
    assert config["task"] == "generation"
    g = config["generation"]
    assert g["condition"] == "class" and g["classes"] == ["horizontal", "vertical"]
    assert g["intensity"] == [0.0, 255.0]
    assert g["network"]["num_classes"] == 2 and g["network"]["in_channels"] == 1
    assert (class_run / "samples" / "epoch_001.png").is_file()
    run = Run.load(class_run)
    assert run.task == "generation" and isinstance(run.model, DiffusionUNet)
    assert run.history[0]["val_loss"] == run.history[0]["val_loss"]  # a number, not NaN


def test_resume_continues_the_run(class_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(class_run, run)
    assert main(["train", "--resume", str(run), "--budget.epochs", "2", "--no-progress"]) == 0
    history = Run.load(run).history
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["step"] == 2 * history[0]["step"]
    assert (run / "samples" / "epoch_002.png").is_file()


# ------------------------------------------------------------------------------------------- sampling
def test_generate_writes_samples_a_grid_and_the_settings(class_run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["generate", str(class_run), "--out", str(out), "--n", "3", "--steps", "2",
                 "--class", "vertical", "--sampler", "ddpm"]) == 0
    files = sorted(out.glob("sample_*.png"))
    assert len(files) == 3
    image = np.asarray(Image.open(files[0]))
    assert image.shape == (8, 8) and image.dtype == np.uint8
    assert (out / "grid.png").is_file()
    settings = json.loads((out / "generate.json").read_text())
    assert settings["class"] == "vertical" and settings["sampler"] == "ddpm" and settings["n"] == 3


def test_an_unknown_class_is_refused_before_anything_is_written(class_run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["generate", str(class_run), "--out", str(out), "--class", "diagonal"]) == 2
    err = capsys.readouterr().err
    assert "diagonal" in err and "horizontal, vertical" in err
    assert not out.exists()


def test_ddim_with_eta_zero_is_deterministic_and_seeded(class_run):
    sampler = DiffusionSampler.from_run(class_run, device="cpu")
    a = sampler.sample(4, steps=3, seed=5)
    b = sampler.sample(4, steps=3, seed=5, batch_size=2)
    c = sampler.sample(4, steps=3, seed=6)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c)
    assert a.shape == (4, 1, 8, 8) and float(a.abs().max()) <= 1.0 + 1e-6


def test_guidance_zero_equals_the_unconditional_model(class_run):
    sampler = DiffusionSampler.from_run(class_run, device="cpu")
    with torch.no_grad():
        for p in sampler.model.parameters():  # a trained-looking net: the class matters
            p.add_(torch.randn_like(p) * 0.05)
    null = torch.full((2,), len(sampler.classes), dtype=torch.long)
    unconditional = sampler.sample(2, labels=null, guidance=1.0, steps=3, seed=1)
    guided_zero = sampler.sample(2, labels=torch.tensor([0, 1]), guidance=0.0, steps=3, seed=1)
    conditional = sampler.sample(2, labels=torch.tensor([0, 1]), guidance=1.0, steps=3, seed=1)
    assert torch.allclose(unconditional, guided_zero, atol=1e-5)
    assert not torch.allclose(conditional, guided_zero, atol=1e-3)


# ----------------------------------------------------------------------------- image conditions
def test_a_mask_run_generates_one_image_per_mask_of_the_masks_size(tmp_path):
    data = masks_dataset(tmp_path / "masks_data")
    run = tmp_path / "run"
    assert train_cli(data, run, "--condition", "mask", "--data.patch-size", "8") == 0
    assert (run / "classes.json").is_file()
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.fromarray(np.pad(np.full((7, 9), 255, np.uint8), 2)).save(odd / "odd.png")  # 11 x 13: padded
    out = tmp_path / "out"
    assert main(["generate", str(run), "--out", str(out), "--condition", str(data / "masks"),
                 str(odd / "odd.png"), "--steps", "2"]) == 0
    assert sorted(p.name for p in out.glob("*.png") if p.name != "grid.png") == [
        "odd.png", "s0.png", "s1.png", "s2.png", "s3.png"]
    assert np.asarray(Image.open(out / "odd.png")).shape == (11, 13)
    assert main(["generate", str(run), "--out", str(tmp_path / "none")]) == 2


def test_a_super_resolution_stage_must_fit_the_stage_before(class_run, tmp_path, capsys):
    images = tmp_path / "hr"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(images / f"{i}.png")
    sr = tmp_path / "sr"
    assert train_cli(images, sr, "--condition", "low-res", "--scale", "4", "--data.patch-size", "16") == 0
    config = json.loads((sr / "config.json").read_text())["generation"]
    assert config["network"]["cond_channels"] == 1 and config["network"]["noise_level_input"]
    # the base makes 8-pixel images; this stage raises 4-pixel ones (16 / 4)
    assert main(["generate", str(class_run), str(sr), "--out", str(tmp_path / "c")]) == 2
    assert "--data.patch-size 32" in capsys.readouterr().err
    stages = [DiffusionSampler.from_run(p, device="cpu") for p in (class_run, sr)]
    with pytest.raises(ValueError, match="4-pixel"):
        check_cascade(stages, ["base", "sr"])
    low = tmp_path / "low.png"
    Image.fromarray(rng.integers(0, 255, (5, 6), dtype=np.uint8)).save(low)
    out = tmp_path / "up"
    assert main(["generate", str(sr), "--out", str(out), "--condition", str(low), "--steps", "2",
                 "--condition-noise", "0.1"]) == 0
    assert np.asarray(Image.open(out / "low.png")).shape == (20, 24)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(rng.integers(0, 255, (5, 6, 3), dtype=np.uint8)).save(rgb)
    assert main(["generate", str(sr), "--out", str(tmp_path / "bad"), "--condition", str(rgb)]) == 2
    assert "rgb.png" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_broken_condition_files_are_named_and_the_others_drawn(tmp_path, capsys):
    from broken_corpus import BROKEN, GOOD, assert_each_named_once, write_corpus

    images, sr = super_resolution_run(tmp_path)
    conditions = tmp_path / "conditions"
    write_corpus(conditions)
    capsys.readouterr()
    out = tmp_path / "out"
    code = main(["generate", str(sr), "--out", str(out), "--condition", str(conditions), "--steps", "1"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert_each_named_once(captured.out, {**BROKEN, "stack.tif": "shape"})
    assert sorted(p.stem for p in out.iterdir() if p.stem not in ("grid", "generate")) == sorted(
        Path(n).stem for n in GOOD)


def test_sixteen_bit_images_are_generated_as_sixteen_bit_tiffs(tmp_path):
    data = bars(tmp_path / "bars16", n=3, dtype=np.uint16)
    run = tmp_path / "run"
    assert train_cli(data, run, "--condition", "none") == 0
    config = json.loads((run / "config.json").read_text())["generation"]
    assert config["intensity"] == [0.0, 65535.0] and config["network"]["num_classes"] == 0
    out = tmp_path / "out"
    assert main(["generate", str(run), "--out", str(out), "--n", "2", "--steps", "2"]) == 0
    sample = tifffile.imread(out / "sample_0000.tif")
    assert sample.dtype == np.uint16 and sample.shape == (8, 8)


# ---------------------------------------------------------------------------------------- the data
def test_class_folders_and_loose_images_cannot_be_mixed(tmp_path):
    data = bars(tmp_path / "d", n=2)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "loose.png")
    with pytest.raises(DataError, match="class subfolders"):
        find_generation_images(data)


def test_class_condition_needs_class_folders(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / f"{i}.png")
    assert train_cli(flat, tmp_path / "run", "--condition", "class") == 2
    assert "subfolder" in capsys.readouterr().err


def test_mixed_channels_are_refused_naming_the_folder(tmp_path, capsys):
    data = bars(tmp_path / "d", n=2)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data / "vertical" / "colour.png")
    assert train_cli(data, tmp_path / "run") == 2
    assert "channel" in capsys.readouterr().err


def test_intensity_mapping_round_trips_and_follows_the_dtype():
    assert intensity_range([np.zeros((1, 2, 2), np.uint8)]) == (0.0, 255.0)
    assert intensity_range([np.zeros((1, 2, 2), np.uint8), np.zeros((1, 2, 2), np.uint16)]) == (0.0, 65535.0)
    floats = [np.array([[[0.5, 2.5]]], np.float32), np.array([[[-1.0, 1.0]]], np.float32)]
    assert intensity_range(floats) == (-1.0, 2.5)
    image = np.arange(0, 256, 17, dtype=np.uint8).reshape(1, 4, 4)
    unit = to_unit_range(image, (0, 255))
    assert unit.min() == -1.0 and unit.max() == 1.0
    assert np.array_equal(from_unit_range(unit, (0, 255), np.dtype(np.uint8)), image)


def test_the_dataset_crops_flips_and_conditions_consistently():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 16, 16)).astype(np.float32)
    mask = np.stack([image[0] < 0, image[0] >= 0]).astype(np.float32)
    masked = GenerationPatchDataset(
        [LoadedImage("a", image, None, mask)], patch_size=8, condition="mask", scale=1, num_classes=0,
        flips=True, seed=0, patches_per_epoch=8,
    )
    for i in range(8):
        item = masked[i]
        assert torch.equal(item["cond_image"][1] > 0, item["image"][0] >= 0)  # mask follows the crop and flip
        assert int(item["label"]) == 0
    low = GenerationPatchDataset(
        [LoadedImage("a", image, 1)], patch_size=8, condition="low_res", scale=2, num_classes=3,
        flips=False, seed=0, patches_per_epoch=2,
    )
    item = low[0]
    assert np.allclose(item["cond_image"].numpy(), low_res_condition(item["image"].numpy(), 2))
    assert int(item["label"]) == 1
    masked.set_epoch(1)
    assert not torch.equal(masked[0]["image"], GenerationPatchDataset(
        [LoadedImage("a", image, None, mask)], patch_size=8, condition="mask", scale=1, num_classes=0,
        flips=True, seed=0, patches_per_epoch=8)[0]["image"])


def test_unknown_generation_settings_are_refused():
    for field, value in (("generation.condition", "text"), ("generation.prediction", "x0"),
                         ("generation.schedule", "sigmoid")):
        with pytest.raises(ValueError, match=field):
            apply_overrides(TrainConfig(task="generation"), {field: value}).validate()


def test_a_tiny_model_learns_one_image(tmp_path):
    """Trained on copies of one image, every sample (fresh noise each) comes out as that image."""
    data = tmp_path / "one"
    data.mkdir()
    image = np.zeros((8, 8), np.uint8)
    image[2:6, 1], image[1, 2:7], image[6, 3:5] = 255, 200, 120
    for i in range(2):
        Image.fromarray(image).save(data / f"{i}.png")
    from unetkit.training import train

    config = apply_overrides(TrainConfig(task="generation"), {
        "data.train": str(data), "data.val_fraction": 0, "data.patch_size": 8, "data.batch_size": 32,
        "data.patches_per_epoch": 32 * 150, "generation.network.base_channels": 16,
        "generation.network.channel_mults": "1,2", "generation.network.num_res_blocks": 1,
        "generation.network.groups": 4, "generation.sample_steps": 1, "generation.prediction": "v",
        "optim.lr": 3e-3, "optim.ema": 0.9, "optim.grad_clip": 1.0, "schedule.warmup_steps": 10,
        "budget.epochs": 1, "out": str(tmp_path / "run"), "threads": 1,
    })
    train(config, progress_bar=False, log=lambda message: None)
    sampler = DiffusionSampler.from_run(tmp_path / "run", device="cpu")
    samples = np.stack(sampler.to_data(sampler.sample(8, steps=20, seed=1)))[:, 0].astype(float)
    error = np.abs(samples - image).mean(axis=(1, 2))
    assert error.max() < 20 and error.mean() < 10, error  # of 255; an untrained net is ~100 off


def test_predict_and_serve_point_a_generation_run_to_generate(class_run, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert main(["predict", str(class_run), str(image), "--out", str(tmp_path / "out")]) == 2
    assert "unetkit generate" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- evaluate
def test_evaluate_scores_samples_against_the_held_out_split(class_run, tmp_path):
    from unetkit.training.evaluation import evaluate_run

    data = Path(json.loads((class_run / "config.json").read_text())["data"]["train"])
    summary = evaluate_run(class_run, data, tmp_path / "report", generation=dict(n=6, steps=2, guidance=3.0))
    assert summary["n_samples"] == 6 and summary["n_held_out"] == 2  # 20 % of 12 bars
    for key in ("accuracy", "real_accuracy", "frechet", "frechet_floor", "nn_distance", "nn_distance_real"):
        assert np.isfinite(summary[key]), key
    assert 0 <= summary["accuracy"] <= 1 and summary["copies"] <= 6
    assert (tmp_path / "report" / "samples.png").is_file() and (tmp_path / "report" / "report.md").is_file()
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["guidance"] == 3.0


def test_evaluate_a_super_resolution_stage_on_pairs_and_a_mask_run_with_a_segmenter(tmp_path):
    from unetkit.training.evaluation import evaluate_run

    hr, sr = super_resolution_run(tmp_path)
    (hr / "saved page.png").write_text("<html>404</html>")  # a broken file among the held-out images
    summary = evaluate_run(sr, hr, tmp_path / "sr_report", generation=dict(steps=2))
    assert summary["num_images"] == 3 and summary["scale"] == 2
    assert len(summary["failed"]) == 1 and "saved page.png" in summary["failed"][0]
    assert all(np.isfinite(summary[k]) for k in ("psnr", "psnr_bicubic", "consistency_psnr"))
    assert len(list((tmp_path / "sr_report" / "crops").glob("*.png"))) == 3

    data = masks_dataset(tmp_path / "masks_data")
    run = tmp_path / "mask_run"
    assert train_cli(data, run, "--condition", "mask", "--data.patch-size", "8") == 0
    segmenter = tmp_path / "seg"
    assert main([
        "train", str(data), "--out", str(segmenter), "--preset", "tutorial", "--data.patch-size", "16",
        "--data.batch-size", "2", "--budget.epochs", "1", "--model.depth", "2", "--model.base-channels", "4",
        "--model.dropout", "0",
        "--threads", "1", "--no-progress",
    ]) == 0
    summary = evaluate_run(run, data, tmp_path / "mask_report", generation=dict(steps=2, segmenter=segmenter))
    assert summary["num_images"] == 4
    assert 0 <= summary["dice_generated"] <= 1 and 0 <= summary["dice_real"] <= 1
    assert len(list((tmp_path / "mask_report" / "samples").glob("*.png"))) == 4
