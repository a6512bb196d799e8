"""The planner's choices and the train/plan/evaluate command lines."""

import json

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main
from unetkit.data.synthetic import write_synthetic_dataset
from unetkit.training.planner import MIN_EPOCH_SECONDS, Machine, _passes, plan_training

CPU = Machine("cpu", cpus=2, memory_gb=8.0)
GPU = Machine("cuda", cpus=16, memory_gb=128.0, gpu="test GPU", gpu_memory_gb=80.0)


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("cells") / "data", 4, size=96, seed=0)


def write_rgb_dataset(root, n=3, size=64, classes=4):
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        mask = np.zeros((size, size), np.uint8)
        mask[:, size // 2:] = 1
        mask[:4, :4] = np.arange(2, classes).repeat(8)[:16].reshape(4, 4)  # rare classes
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def test_plan_fits_images_machine_and_classes(cells, tmp_path):
    plan = plan_training(cells, machine=CPU, measure=False, target="semantic")
    c = plan.config
    assert c.data.patch_size <= 96 and c.data.patch_size % 2**c.model.depth == 0
    assert c.model.num_classes == 1 and c.model.in_channels == 1 and c.model.padding == "same"
    assert c.data.normalize.mode == "percentile" and c.model.base_channels == 16
    assert "patch" in plan.format() and len(plan.reasons) >= 6
    assert plan.fingerprint.median_object_diameter > 0

    on_gpu = plan_training(cells, machine=GPU, measure=False, target="semantic").config
    assert on_gpu.model.base_channels > c.model.base_channels and on_gpu.data.batch_size > c.data.batch_size

    rgb = plan_training(write_rgb_dataset(tmp_path / "rgb"), machine=CPU, measure=False)
    assert rgb.config.model.num_classes == 4 and rgb.config.model.in_channels == 3
    assert rgb.config.loss.name == "ce_dice"  # rare classes
    assert rgb.config.data.normalize.mode == "fixed"  # full-range 8-bit colour
    assert rgb.config.budget.monitor == "mean_iou"


def test_plan_times_a_step_and_sizes_the_budget(cells):
    plan = plan_training(cells, machine=CPU, max_minutes=5)
    assert plan.seconds_per_step > 0
    assert plan.config.budget.max_minutes == 5 and plan.config.budget.epochs >= 100
    # Tiny images train fast: epochs are lengthened so that validating after each stays cheap.
    steps = plan.config.data.patches_per_epoch // plan.config.data.batch_size
    assert steps * plan.seconds_per_step >= MIN_EPOCH_SECONDS * 0.99 and "small share" in plan.format()


def test_train_print_config_applies_overrides(cells, capsys):
    code = main(["train", str(cells), "--preset", "tutorial", "--model.base-channels", "24",
                 "--print-config"])
    assert code == 0
    out = capsys.readouterr().out
    assert "base_channels: 24" in out and f"train: {cells}" in out


def test_train_rejects_unknown_field_and_bad_dataset(cells, tmp_path, capsys):
    assert main(["train", str(cells), "--preset", "tutorial", "--model.base-chanels", "24"]) == 2
    assert "did you mean model.base_channels" in capsys.readouterr().err
    broken = write_synthetic_dataset(tmp_path / "broken", 2, size=32, seed=1)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(broken / "masks" / "cell_001.png")
    assert main(["train", str(broken), "--preset", "tutorial", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "cell_001.png: mask size 16x16 differs" in err and "problem" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_train_then_evaluate_from_the_command_line(cells, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(cells), "--preset", "tutorial", "--out", str(run), "--no-progress",
            "--data.patch-size", "32", "--data.batch-size", "4", "--data.patches-per-epoch", "8",
            "--model.depth", "2", "--model.base-channels", "4", "--model.dropout", "0",
            "--budget.epochs", "2", "--val-fraction", "0.25"]
    assert main(args) == 0
    assert main(["evaluate", str(run), str(cells), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "dice" in out and "report.md" in out
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["num_images"] == 4 and 0 <= summary["rand_error_best"] <= summary["rand_error"] + 1e-9


def test_plan_for_the_three_class_target(cells):
    plan = plan_training(cells, machine=CPU, measure=False, target="three_class")
    c = plan.config
    assert c.data.target == "three_class" and c.model.num_classes == 3
    assert c.loss.name == "ce_dice" and c.budget.monitor == "mean_iou"
    assert "border" in plan.format()


def test_train_target_flag_plans_three_classes(cells, capsys):
    assert main(["train", str(cells), "--target", "three-class", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "target: three_class" in out and "num_classes: 3" in out and "name: ce_dice" in out


def test_plan_sets_an_object_scale_when_object_sizes_vary(cells, tmp_path):
    from skimage.draw import disk

    root = tmp_path / "mixed"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(8):
        radius = 4 if i % 2 else 16  # two magnifications: 8 px and 32 px nuclei
        mask = np.zeros((96, 96), np.uint8)
        for centre in ((24, 24), (24, 72), (72, 48)):
            mask[disk(centre, radius, shape=mask.shape)] = 255
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
        Image.fromarray((mask // 2 + 20).astype(np.uint8)).save(root / "images" / f"{i}.png")
    plan = plan_training(root, machine=CPU, measure=False)
    assert 8 <= plan.config.data.object_diameter <= 32
    assert "object diameter" in "\n".join(plan.reasons) and "objects resized" in plan.format()
    # Validation at an object scale costs a first pass plus the resized second one.
    assert _passes(10.0, 20.0, 2) == 5.0 and _passes(19.5, 20.0, 2) == 1.0 and _passes(10.0, None, 2) == 1.0
    same_size = plan_training(cells, machine=CPU, measure=False)
    assert same_size.config.data.object_diameter is None
    assert any(r.startswith("objects at each image's own scale") for r in same_size.reasons)
