"""The trainer end to end on tiny synthetic data: run folder, evaluation, reproducibility, NaN, budget."""

import json
import math

import numpy as np
import pytest
import torch

from unetkit.config import TrainConfig, apply_overrides
from unetkit.data.io import read_label_image
from unetkit.data.synthetic import write_synthetic_dataset
from unetkit.metrics import ISBI_THRESHOLDS
from unetkit.precision import mixed_precision_dtype
from unetkit.training import Run, Trainer, TrainingDiverged, train
from unetkit.training.evaluation import evaluate_run
from unetkit.training.state import load_state
from unetkit.training.trainer import lr_factor

TINY = {
    "model.depth": 2,
    "model.base_channels": 8,
    "model.num_classes": 1,
    "data.patch_size": 64,
    "data.batch_size": 4,
    "data.patches_per_epoch": 16,
    "data.val_fraction": 0.25,
    "schedule.warmup_steps": 2,
    "optim.lr": 3e-3,
    "threads": 1,
}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    return write_synthetic_dataset(root / "train", 8, size=64, seed=0), write_synthetic_dataset(
        root / "test", 3, size=64, seed=5
    )


def tiny_config(data, out, **extra):
    return apply_overrides(TrainConfig(), {**TINY, "data.train": str(data), "out": str(out), **extra})


def test_train_writes_run_folder_and_evaluates(cells, tmp_path):
    train_dir, test_dir = cells
    run = train(
        tiny_config(train_dir, tmp_path / "run", **{"budget.epochs": 6}),
        progress_bar=False,
        log=lambda _: None,
    )
    for name in (
        "model.safetensors",
        "model.json",
        "config.json",
        "classes.json",
        "metrics.csv",
        "curves.png",
        "precision.json",
    ):
        assert (run.path / name).is_file(), name
    record = json.loads((run.path / "precision.json").read_text())  # measured on the validation images
    assert 0.9 < record["bf16_label_agreement"] <= 1.0 and record["images"] == 2  # the 2 validation images
    assert record["reduced_precision"] == (record["bf16_label_agreement"] >= 0.999)
    assert len(list((run.path / "samples").glob("*.png"))) == 2
    assert [h["epoch"] for h in run.history] == [1, 2, 3, 4, 5, 6]
    assert run.history[-1]["step"] == 6 * 4
    assert run.history[-1]["loss"] < run.history[0]["loss"]
    assert run.best["dice"] == max(h["dice"] for h in run.history) > 0.6
    loaded = Run.load(run.path)
    assert loaded.config == run.config and loaded.classes.encoding == "binary255"
    assert loaded.status == "done"

    summary = evaluate_run(run.path, test_dir, tmp_path / "report")
    assert summary["num_images"] == 3 and 0.0 <= summary["pixel_error"] <= 1.0
    assert 0.0 <= summary["isbi_pixel_error"] <= 1.0 and summary["isbi_pixel_threshold"] in ISBI_THRESHOLDS
    rows = (tmp_path / "report" / "per_image.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("image,")
    assert "## Worst" in (tmp_path / "report" / "report.md").read_text()
    mask = read_label_image(tmp_path / "report" / "masks" / "cell_000.png")
    assert set(np.unique(mask)) <= {0, 255}  # the training masks' 0/255 encoding
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["dice"] == pytest.approx(
        summary["dice"]
    )



def test_training_and_evaluation_at_an_object_scale(cells, tmp_path):
    """``data.object_diameter``: patches from resized images, validation and evaluation at that scale."""
    train_dir, test_dir = cells
    config = tiny_config(train_dir, tmp_path / "run", **{"budget.epochs": 2, "data.object_diameter": 20.0})
    run = train(config, progress_bar=False, log=lambda _: None)
    assert Run.load(run.path).config.data.object_diameter == 20.0
    assert 0.0 <= run.best["dice"] <= 1.0
    summary = evaluate_run(run.path, test_dir, tmp_path / "report")
    assert summary["num_images"] == 3
    assert read_label_image(tmp_path / "report" / "masks" / "cell_000.png").shape == (64, 64)

def test_same_seed_same_losses(cells, tmp_path):
    train_dir, _ = cells
    runs = [
        train(
            tiny_config(train_dir, tmp_path / f"run{i}", **{"budget.epochs": 2, "augment.elastic_p": 0.5}),
            progress_bar=False,
            log=lambda _: None,
        )
        for i in range(2)
    ]
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    other = train(
        tiny_config(train_dir, tmp_path / "run-seed", **{"budget.epochs": 2, "seed": 1}),
        progress_bar=False,
        log=lambda _: None,
    )
    assert [h["loss"] for h in other.history] != [h["loss"] for h in runs[0].history]


def test_precision_choice_and_bf16_training(cells, tmp_path):
    cpu = torch.device("cpu")
    assert mixed_precision_dtype(cpu, "fp32") is None
    assert mixed_precision_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny_config(cells[0], tmp_path / "bad", precision="fp8").validate()
    train_dir, _ = cells
    losses = {}
    for precision in ("fp32", "bf16"):
        run = train(
            tiny_config(train_dir, tmp_path / precision, **{"budget.epochs": 2, "precision": precision}),
            progress_bar=False,
            log=lambda _: None,
        )
        losses[precision] = [h["loss"] for h in run.history]
    # Same data and seed: bfloat16 arithmetic changes the losses a little, not the learning.
    assert losses["fp32"] != losses["bf16"]
    assert losses["fp32"] == pytest.approx(losses["bf16"], rel=0.1)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cells, tmp_path):
    train_dir, _ = cells
    out = tmp_path / "run"
    train(tiny_config(train_dir, out, **{"budget.epochs": 1}), progress_bar=False, log=lambda _: None)
    weights = (out / "model.safetensors").read_bytes()
    # Continue with an absurd learning rate and no clipping: the loss overflows in epoch 2.
    exploding = tiny_config(
        train_dir,
        out,
        **{
            "budget.epochs": 3,
            "optim.lr": 1e12,
            "optim.grad_clip": "none",
            "schedule.name": "constant",
            "schedule.warmup_steps": 0,
        },
    )
    with pytest.raises(TrainingDiverged, match=r"keeps the last good checkpoint \(epoch 1\)"):
        Trainer(exploding, resume=True, progress_bar=False, log=lambda _: None).fit()
    assert (out / "model.safetensors").read_bytes() == weights
    model = Run.load(out).model
    progress = load_state(out, model, torch.optim.Adam(model.parameters()))
    assert progress.epoch == 1 and all(math.isfinite(p.sum().item()) for p in model.parameters())


def test_time_budget_ends_cleanly_with_best_model(cells, tmp_path):
    train_dir, _ = cells
    run = train(
        tiny_config(train_dir, tmp_path / "run", **{"budget.epochs": 1000, "budget.max_minutes": 0.05}),
        progress_bar=False,
        log=lambda _: None,
    )
    assert run.status == "time budget reached"
    assert 1 <= len(run.history) < 1000 and (run.path / "model.safetensors").is_file()
    # The schedule follows the clock: the last epochs ran at a learning rate well below the peak.
    assert run.history[-1]["lr"] < 0.5 * run.config.optim.lr


def test_existing_run_is_not_overwritten(cells, tmp_path):
    train_dir, _ = cells
    out = tmp_path / "run"
    train(tiny_config(train_dir, out, **{"budget.epochs": 1}), progress_bar=False, log=lambda _: None)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(train_dir, out, **{"budget.epochs": 1}), progress_bar=False, log=lambda _: None)


def test_lr_schedule_values():
    config = apply_overrides(TrainConfig(), {"schedule.warmup_steps": 4, "schedule.final_lr_fraction": 0.0})
    assert lr_factor(0, 0.0, config) == pytest.approx(0.25)
    assert lr_factor(3, 0.0, config) == pytest.approx(1.0)
    assert lr_factor(10, 0.5, config) == pytest.approx(0.5)
    assert lr_factor(10, 1.0, config) == pytest.approx(0.0)
    poly = apply_overrides(config, {"schedule.name": "poly", "schedule.power": 2.0})
    assert lr_factor(10, 0.5, poly) == pytest.approx(0.25)
    constant = apply_overrides(config, {"schedule.name": "constant"})
    assert lr_factor(10, 0.9, constant) == 1.0


def test_early_stopping_without_validation_set_monitors_the_loss(cells, tmp_path):
    train_dir, _ = cells
    config = tiny_config(train_dir, tmp_path / "run", **{
        "data.val_fraction": 0.0, "budget.epochs": 40, "budget.patience": 1, "budget.monitor": "loss",
        "data.patches_per_epoch": 4,
    })
    run = train(config, progress_bar=False, log=lambda _: None)
    assert run.status.startswith("early stopping") and len(run.history) < 40
    losses = [h["loss"] for h in run.history]
    assert losses[-1] >= min(losses[:-1])  # the last epoch did not improve
    assert Run.load(run.path).best["loss"] == min(losses)


def test_trains_on_3d_volumes(tmp_path):
    data = write_synthetic_dataset(tmp_path / "vol", 3, size=32, seed=0, dims=3)
    config = tiny_config(data, tmp_path / "run", **{
        "model.dims": 3, "data.patch_size": 16, "data.batch_size": 2, "data.patches_per_epoch": 4,
        "budget.epochs": 1, "data.val_fraction": 0.34,
    })
    run = train(config, progress_bar=False, log=lambda _: None)
    assert run.model.spatial_dims == 3 and 0.0 <= run.history[0]["dice"] <= 1.0
    assert (run.path / "samples").is_dir()
