"""The restoration task on the shared trainer: `unetkit train --task ...` end to end on tiny images,
resume, the errors of bad data or options, the loss, and the restoration planner."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from unetkit.cli import main
from unetkit.config import RestorationConfig, TrainConfig, apply_overrides
from unetkit.data.neighbours import neighbour_pair_indices, take_subimage
from unetkit.tasks.base import TaskData
from unetkit.tasks.restoration import NEIGHBOR2NEIGHBOR_GAMMA, RestorationTask, neighbor2neighbor_loss
from unetkit.training import Run
from unetkit.training.planner import Machine
from unetkit.training.restoration_plan import plan_restoration

CPU = Machine("cpu", cpus=2, memory_gb=8.0)
TINY = [
    "--preset", "tutorial", "--no-progress", "--threads", "1",
    "--model.depth", "2", "--model.base-channels", "4", "--model.dropout", "0",
    "--data.patch-size", "32", "--data.batch-size", "4", "--data.patches-per-epoch", "8",
    "--data.normalize.mode", "fixed", "--budget.epochs", "2", "--schedule.warmup-steps", "0",
]


def smooth(size: int, seed: int) -> np.ndarray:
    """A smooth random uint8 image, values about 20..220."""
    image = gaussian_filter(np.random.default_rng(seed).random((size, size)), 4)
    image = (image - image.min()) / (image.max() - image.min())
    return (20 + 200 * image).astype(np.uint8)


def write_images(folder: Path, n: int = 6, size: int = 64, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(smooth(size, seed + i)).save(folder / f"im{i}.png")
    return folder


def write_pairs(root: Path, n: int = 6, size: int = 64) -> Path:
    rng = np.random.default_rng(1)
    for sub in ("inputs", "targets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        clean = smooth(size, 100 + i)
        noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(root / "targets" / f"p{i}.png")
        Image.fromarray(noisy).save(root / "inputs" / f"p{i}.png")
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("clean") / "images")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs") / "data")


def train_cli(data, out, *options) -> int:
    return main(["train", str(data), "--out", str(out), *TINY, *map(str, options)])


def metrics_header(run: Path) -> list[str]:
    with open(run / "metrics.csv", newline="") as f:
        return next(csv.reader(f))


def check_restoration_run(run: Path, mode: str) -> Run:
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "restoration" and config["restoration"]["mode"] == mode
    assert not (run / "classes.json").exists()
    assert (run / "model.safetensors").is_file() and (run / "curves.png").is_file()
    assert list((run / "samples").glob("*.png"))
    loaded = Run.load(run)
    assert loaded.task == "restoration" and loaded.classes is None
    assert [h["epoch"] for h in loaded.history] == [1, 2]
    model = loaded.model
    assert model.config.residual and model.config.num_classes == model.config.in_channels == 1
    return loaded


# ------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def denoised(clean, tmp_path_factory) -> tuple[Path, str]:
    """A denoising run of 2 epochs, and what `unetkit train` printed."""
    run = tmp_path_factory.mktemp("denoised") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert train_cli(clean, run, "--task", "denoise", "--noise", "gaussian:25") == 0
    return run, printed.getvalue()


def test_denoise_from_the_command_line(denoised):
    run, printed = denoised
    assert "denoising (gaussian:25)" in printed
    loaded = check_restoration_run(run, "denoise")
    assert {"psnr", "ssim", "psnr_input"} <= set(metrics_header(run))
    assert loaded.config.restoration.noise == "gaussian:25" and loaded.config.loss.name == "l2"
    assert loaded.config.budget.monitor == "psnr"
    # noisy at sigma 25 on 0-255: about 20 dB before restoration
    assert 18.0 < loaded.history[-1]["psnr_input"] < 22.5
    assert loaded.best["psnr"] == max(h["psnr"] for h in loaded.history)


def test_super_resolve_from_the_command_line(clean, tmp_path):
    run = tmp_path / "run"
    assert train_cli(clean, run, "--task", "super-resolve", "--scale", "2") == 0
    loaded = check_restoration_run(run, "super_resolve")
    assert loaded.config.restoration.scale == 2 and loaded.config.loss.name == "l1"
    assert {"psnr", "ssim", "psnr_input"} <= set(metrics_header(run))
    # scored against the bicubic upscale, which a fresh residual net starts from
    assert loaded.history[0]["psnr"] == pytest.approx(loaded.history[0]["psnr_input"], abs=3.0)


def test_paired_restoration_from_the_command_line(pairs, tmp_path):
    run = tmp_path / "run"
    assert train_cli(pairs, run, "--task", "restore") == 0
    loaded = check_restoration_run(run, "pairs")
    assert loaded.config.restoration.scale == 1
    assert {"psnr", "ssim", "psnr_input"} <= set(metrics_header(run))


def test_paired_restoration_with_2x_targets_learns_the_scale(tmp_path):
    data = tmp_path / "data"
    for sub in ("inputs", "targets"):
        (data / sub).mkdir(parents=True)
    for i in range(5):
        target = Image.fromarray(smooth(64, 300 + i))
        target.save(data / "targets" / f"s{i}.png")
        target.resize((32, 32), Image.Resampling.BICUBIC).save(data / "inputs" / f"s{i}.png")
    run = tmp_path / "run"
    assert train_cli(data, run, "--task", "restore") == 0
    loaded = check_restoration_run(run, "pairs")
    assert loaded.config.restoration.scale == 2
    assert loaded.history[-1]["psnr_input"] > 30  # scored against the bicubic upscale of the input
    assert main(["predict", str(run), str(data / "inputs" / "s0.png"), "--out", str(tmp_path / "out")]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "s0.png")).shape == (64, 64)


def test_without_validation_the_epoch_of_lowest_loss_is_kept(clean, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(clean, run, "--task", "denoise", "--data.val-fraction", "0", "--budget.epochs", "3") == 0
    out = capsys.readouterr().out
    losses = [h["loss"] for h in Run.load(run).history]
    assert len(set(losses)) == 3
    kept = int(out.split(" at epoch ")[1].split(";")[0])
    assert losses[kept - 1] == min(losses), out


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("noisy") / "images"
    folder.mkdir()
    for i in range(6):
        image = np.clip(smooth(64, 200 + i) + rng.normal(0, 20, (64, 64)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"n{i}.png")
    return folder


@pytest.mark.parametrize("method", ["noise2void", "neighbor2neighbor", None])
def test_self_supervised_denoising_from_the_command_line(noisy, tmp_path, capsys, method):
    run = tmp_path / "run"
    assert train_cli(noisy, run, "--task", "denoise", "--self-supervised", *([method] if method else [])) == 0
    loaded = check_restoration_run(run, method or "noise2void")  # the flag alone: Noise2Void
    header = metrics_header(run)
    assert "val_loss" in header and "psnr" not in header
    assert loaded.config.budget.monitor == "val_loss"
    assert loaded.best["val_loss"] == min(h["val_loss"] for h in loaded.history)
    by = "loss between neighbour sub-images" if method == "neighbor2neighbor" else "blind-spot loss"
    assert f"without clean validation targets: validating by the {by}" in capsys.readouterr().out


def test_a_restoration_run_resumes_where_it_stopped(clean, denoised, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(clean, run, "--task", "denoise", "--budget.epochs", "1") == 0
    assert [h["epoch"] for h in Run.load(run).history] == [1]
    capsys.readouterr()
    # the restoration settings are frozen: the schedule and the data it continues depend on them
    assert main(["train", "--resume", str(run), "--restoration.noise", "gaussian:5"]) == 2
    assert "restoration.noise" in capsys.readouterr().err
    code = main(["train", "--resume", str(run), "--budget.epochs", "2", "--no-progress", "--threads", "1"])
    assert code == 0
    resumed = Run.load(run)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[-1]["step"] == 2 * 2  # 8 patches of batch 4 per epoch
    assert resumed.task == "restoration" and resumed.classes is None
    assert resumed.config.budget.epochs == 2 and resumed.config.restoration.noise == "gaussian:25"
    assert not (run / "classes.json").exists()
    # constant learning rate: the same second epoch (patches, noise, weights) as a run never stopped
    uninterrupted = Run.load(denoised[0]).history
    assert resumed.history[1]["loss"] == pytest.approx(uninterrupted[1]["loss"], rel=1e-5)
    assert resumed.history[1]["psnr"] == pytest.approx(uninterrupted[1]["psnr"], rel=1e-5)


# -------------------------------------------------------------------------------------------- errors


def train_error(capsys, data, out, *options) -> str:
    assert train_cli(data, out, *options) == 2
    assert not (Path(out) / "model.safetensors").exists()
    return capsys.readouterr().err


def test_self_supervised_refuses_a_folder_with_clean_targets(pairs, tmp_path, capsys):
    err = train_error(capsys, pairs, tmp_path / "run", "--task", "denoise", "--self-supervised")
    assert str(pairs) in err and "targets/" in err and "--task restore" in err


def test_paired_restoration_needs_inputs_and_targets(clean, tmp_path, capsys):
    err = train_error(capsys, clean, tmp_path / "run", "--task", "restore")
    assert str(clean) in err and "inputs/" in err and "--task denoise" in err


def test_denoising_refuses_a_folder_of_pairs(pairs, tmp_path, capsys):
    err = train_error(capsys, pairs, tmp_path / "run", "--task", "denoise")
    assert str(pairs) in err and "--task restore" in err


def test_options_that_do_not_fit_the_task(clean, tmp_path, capsys):
    err = train_error(capsys, clean, tmp_path / "run", "--task", "super-resolve", "--noise", "gaussian:10")
    assert "--noise" in err and "super-resolve" in err
    err = train_error(capsys, clean, tmp_path / "run", "--task", "super-resolve", "--scale", "1")
    assert "--scale" in err and "2 or more" in err
    err = train_error(capsys, clean, tmp_path / "run", "--self-supervised")
    assert "--self-supervised" in err
    err = train_error(capsys, clean, tmp_path / "run", "--task", "denoise", "--noise", "salt:3")
    assert "salt:3" in err


def test_unmatched_pairs_are_named(tmp_path, capsys):
    data = write_pairs(tmp_path / "data", n=3)
    (data / "targets" / "p1.png").rename(data / "targets" / "other.png")
    err = train_error(capsys, data, tmp_path / "run", "--task", "restore")
    assert "p1.png" in err and "other.png" in err


# ---------------------------------------------------------------------------------------------- loss


def restoration_loss(name: str = "l2"):
    config = apply_overrides(TrainConfig(), {"task": "restoration", "loss.name": name})
    return RestorationTask().build_loss(config, TaskData([], [], in_channels=1, dims=2))


def test_the_loss_is_the_mean_squared_error_without_a_mask():
    torch.manual_seed(0)
    output, target = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    loss = restoration_loss()(lambda image: image, {"image": output, "target": target})
    assert float(loss) == pytest.approx(float(torch.nn.functional.mse_loss(output, target)), rel=1e-6)
    l1 = restoration_loss("l1")(lambda image: image, {"image": output, "target": target})
    assert float(l1) == pytest.approx(float(torch.nn.functional.l1_loss(output, target)), rel=1e-6)


def test_the_loss_counts_only_the_masked_pixels():
    output = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    loss = restoration_loss()(lambda image: output, {"image": output, "target": target, "mask": mask})
    assert float(loss) == pytest.approx((1.0 + 16.0) / 2)
    # two channels, two images: the mean over the masked pixels of every channel
    output = torch.zeros(2, 2, 2, 2)
    target = torch.arange(16, dtype=torch.float32).reshape(2, 2, 2, 2)
    mask = torch.zeros(2, 2, 2)
    mask[0, 0, 1] = 1.0
    mask[1, 1, 0] = 1.0
    loss = restoration_loss()(lambda image: output, {"image": output, "target": target, "mask": mask})
    picked = [target[0, 0, 0, 1], target[0, 1, 0, 1], target[1, 0, 1, 0], target[1, 1, 1, 0]]
    assert float(loss) == pytest.approx(float(sum(v**2 for v in picked) / 4))
    l1 = restoration_loss("l1")(lambda image: output, {"image": output, "target": target, "mask": mask})
    assert float(l1) == pytest.approx(float(sum(picked) / 4))


def test_neighbor2neighbor_loss_is_the_subimage_error_plus_the_ramped_regulariser():
    torch.manual_seed(0)
    noisy = torch.randn(2, 1, 4, 4)
    pairs = [neighbour_pair_indices((4, 4), np.random.default_rng(i)) for i in range(2)]
    a, b = (torch.from_numpy(np.stack(p)) for p in zip(*pairs))
    net = torch.nn.Conv2d(1, 1, 3, padding=1)

    def by_hand(progress: float) -> torch.Tensor:
        whole = net(noisy).detach()
        diff = net(take_subimage(noisy, a)) - take_subimage(noisy, b)
        gap = take_subimage(whole, a) - take_subimage(whole, b)
        return diff.square().mean() + NEIGHBOR2NEIGHBOR_GAMMA * progress * (diff - gap).square().mean()

    loss = neighbor2neighbor_loss(l1=False)
    for progress in (0.0, 0.5, 1.0):
        batch = {"image": noisy, "sub_a": a, "sub_b": b, "progress": torch.tensor(progress)}
        got = loss(net, batch)
        expected = by_hand(progress)
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)
        # the network's pass over the whole image carries no gradient (the paper's stop-gradient)
        grads = torch.autograd.grad(got, net.weight)[0], torch.autograd.grad(expected, net.weight)[0]
        assert torch.allclose(*grads, rtol=1e-4, atol=1e-6)
    # an identity network has no regulariser to pay: its sub-images' difference is the noisy one
    identity = {"image": noisy, "sub_a": a, "sub_b": b, "progress": torch.tensor(1.0)}
    plain = (take_subimage(noisy, a) - take_subimage(noisy, b)).square().mean()
    assert float(loss(lambda x: x, identity)) == pytest.approx(float(plain), rel=1e-6)


# ------------------------------------------------------------------------------------------- planner


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("big") / "images", n=3, size=180)


def test_plan_for_denoising(big):
    plan = plan_restoration(big, RestorationConfig(mode="denoise", noise="gaussian:25"), machine=CPU,
                            measure=False)
    c = plan.config
    assert c.task == "restoration" and c.restoration.mode == "denoise"
    assert c.model.residual and c.model.padding == "same"
    assert c.model.in_channels == c.model.num_classes == 1
    assert c.data.normalize.mode == "fixed" and c.loss.name == "l2" and c.budget.monitor == "psnr"
    assert c.data.patch_size <= 180 and c.data.patch_size % 2**c.model.depth == 0
    assert "denoising (gaussian:25)" in plan.format()
    c.validate()


def test_plan_for_super_resolution_by_3(big):
    plan = plan_restoration(big, RestorationConfig(mode="super_resolve", scale=3), machine=CPU, measure=False)
    c = plan.config
    assert c.data.patch_size % 3 == 0 and c.data.patch_size % 16 == 0
    assert c.restoration.scale == 3 and c.loss.name == "l1" and c.model.residual
    assert "super-resolution x3" in plan.format()


def test_plan_for_noise2void(big, pairs):
    plan = plan_restoration(big, RestorationConfig(mode="noise2void"), machine=CPU, measure=False)
    c = plan.config
    assert c.data.patch_size == 64 and c.budget.monitor == "val_loss" and c.loss.name == "l2"
    assert c.model.residual and c.restoration.mode == "noise2void"
    assert "--self-supervised neighbor2neighbor" in plan.format()  # the better method is named
    # clean validation pairs: scored by PSNR
    with_targets = plan_restoration(big, RestorationConfig(mode="noise2void"), val_dir=pairs, machine=CPU,
                                    measure=False)
    assert with_targets.config.budget.monitor == "psnr"


def test_plan_for_neighbor2neighbor(big):
    plan = plan_restoration(big, RestorationConfig(mode="neighbor2neighbor"), machine=CPU, measure=False)
    c = plan.config
    # the network trains on 64-px sub-images of 128-px patches
    assert c.data.patch_size == 128 and c.model.depth == 4 and c.budget.monitor == "val_loss"
    assert c.loss.name == "l2" and c.model.residual and c.restoration.mode == "neighbor2neighbor"
    assert "64 px sub-images" in plan.format() and "Neighbor2Neighbor" in plan.format()
    c.validate()


def test_the_plan_times_the_neighbor2neighbor_step_it_will_train(big):
    plan = plan_restoration(big, RestorationConfig(mode="neighbor2neighbor"), machine=CPU, max_minutes=1)
    assert plan.seconds_per_step > 0 and plan.config.budget.epochs >= 1


def test_plan_command_prints_the_task(big, capsys):
    assert main(["plan", str(big), "--task", "super-resolve", "--scale", "2", "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert "task      super-resolution x2" in out and "residual" in out
    assert main(["plan", str(big), "--task", "super-resolve", "--noise", "gaussian:5", "--no-timing"]) == 2
