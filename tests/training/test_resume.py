"""Resume after kill -9 and after Ctrl-C: same epochs, same schedule, same losses as an uninterrupted run."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from unetkit.cli import main
from unetkit.data.synthetic import write_synthetic_dataset
from unetkit.models import UNet
from unetkit.training import Run
from unetkit.training.state import Progress, latest_checkpoint, load_state, save_state
from unetkit.training.trainer import lr_factor

SETTINGS = {
    "model.depth": "2", "model.base_channels": "8", "model.num_classes": "1", "model.dropout": "0.1",
    "data.patch_size": "64", "data.batch_size": "4", "data.patches_per_epoch": "32",
    "data.val_fraction": "0.25", "schedule.name": "cosine", "schedule.warmup_steps": "3",
    "budget.epochs": "4", "threads": "1", "optim.ema": "0.9",
}
STEPS_PER_EPOCH = 32 // 4


def train_args(data, out):
    args = ["train", str(data), "--out", str(out), "--preset", "tutorial", "--no-progress"]
    for key, value in SETTINGS.items():
        args += [f"--{key}", value]
    return args


def start(data, out):
    command = [sys.executable, "-m", "unetkit", *train_args(data, out)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_epochs(out, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        metrics = out / "metrics.csv"
        if metrics.is_file() and len(metrics.read_text().splitlines()) > n:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early:\n{proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("training too slow")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("cells") / "train", 6, size=64, seed=2)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_args(data, out)) == 0
    return Run.load(out)


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_interrupted_run_resumes_where_it_stopped(data, reference, tmp_path, how):
    out = tmp_path / "run"
    proc = start(data, out)
    wait_for_epochs(out, 2, proc)
    time.sleep(0.3)  # into epoch 3
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    if how == "ctrl-c":
        assert proc.returncode == 130, output
        assert "state saved" in output and "--resume" in output
    else:
        assert proc.returncode == -signal.SIGKILL
    committed = json.loads((latest_checkpoint(out) / "trainer.json").read_text())
    assert committed["epoch"] >= 2  # at most the epoch in progress is lost

    command = [sys.executable, "-m", "unetkit", "train", "--resume", str(out), "--no-progress"]
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout
    run = Run.load(out)
    assert [h["epoch"] for h in run.history] == [1, 2, 3, 4]
    assert [h["step"] for h in run.history] == [STEPS_PER_EPOCH * e for e in range(1, 5)]
    # The learning rate continues on the schedule: each epoch's last rate is the formula's.
    config = run.config
    total = config.budget.epochs * STEPS_PER_EPOCH
    for h in run.history:
        step = h["step"] - 1
        assert h["lr"] == pytest.approx(config.optim.lr * lr_factor(step, step / total, config), rel=1e-4)
    # Killed: the lost epoch is repeated exactly; Ctrl-C: the epoch goes on with its next batch.
    assert [h["loss"] for h in run.history] == pytest.approx([h["loss"] for h in reference.history], rel=1e-5)
    # The weight average (the validated model) is restored too.
    assert [h["dice"] for h in run.history] == pytest.approx([h["dice"] for h in reference.history], rel=1e-5)


def test_resume_refuses_config_changes_and_missing_state(reference, tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["train", "--resume", str(reference.path), "--model.depth", "3"]) == 2
    assert "a resumed run keeps its config" in capsys.readouterr().err


def test_a_kill_while_the_last_checkpoint_is_rewritten_keeps_the_run_resumable(tmp_path, monkeypatch):
    """The end of a run saves the state again at the same step and epoch: the folder that
    ``latest.json`` names must survive a kill in the middle of that save."""
    model = UNet(1, 1, depth=1, base_channels=2, padding="same")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 1, 8, 8)).sum().backward()
    optimizer.step()
    save_state(tmp_path, model, optimizer, Progress(epoch=2, step=16, status="running"))

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(torch, "save", killed)  # dies writing the optimiser, after the weights
    with pytest.raises(RuntimeError, match="killed"):
        save_state(tmp_path, model, optimizer, Progress(epoch=2, step=16, status="done"))
    monkeypatch.undo()

    fresh = UNet(1, 1, depth=1, base_channels=2, padding="same")
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    progress = load_state(tmp_path, fresh, fresh_optimizer)
    assert (progress.epoch, progress.step, progress.status) == (2, 16, "running")
    for a, b in zip(fresh.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)
    assert fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()

    save_state(tmp_path, model, optimizer, Progress(epoch=2, step=16, status="done"))
    assert load_state(tmp_path, fresh, fresh_optimizer).status == "done"
    assert len(list((tmp_path / "state").glob("ckpt-*"))) == 1  # the earlier folders are gone
