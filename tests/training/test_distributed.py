"""Data-parallel training and sharded prediction on 2+ CPU processes (gloo), started through torchrun's
engine (``--nproc``, standalone rendezvous: the port is a free one found at run time).

Every multi-process command runs with its own watchdog (``WATCHDOG_S``): on expiry its whole process
group is killed and the test fails, so a hang can never stall the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from unetkit.cli import main
from unetkit.config import TrainConfig, apply_overrides, save_config
from unetkit.data.synthetic import write_synthetic_dataset
from unetkit.training import Run, train
from unetkit.training.distributed import (
    choose_backend,
    process_device,
    rank_batches,
    shard_files,
    strip_nproc,
)
from unetkit.training.state import WEIGHTS, latest_checkpoint
from unetkit.training.trainer import resolve_device

WATCHDOG_S = 240
#: Batch norm off (its statistics are per process by design), float32 (no bfloat16 autocast) and a
#: plain SGD step, so that the weights after one step show the gradient itself (Adam's first step
#: is nearly its sign).
SETTINGS = {
    "model.depth": 2, "model.base_channels": 8, "model.num_classes": 1, "model.norm": "none",
    "model.dropout": 0.0, "data.patch_size": 64, "data.patches_per_epoch": 4, "data.val_fraction": 0.34,
    "loss.name": "ce", "optim.name": "sgd", "optim.momentum": 0.0, "optim.lr": 0.5,
    "schedule.name": "constant", "schedule.warmup_steps": 0, "budget.epochs": 1, "threads": 1,
    "precision": "fp32",
}


def cli(*args: str, watchdog: float = WATCHDOG_S) -> subprocess.CompletedProcess:
    """``python -m unetkit ARGS`` in its own process group, killed whole if it outlives ``watchdog``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "unetkit", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        output = proc.communicate(timeout=watchdog)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"watchdog: `unetkit {' '.join(args)}` ran over {watchdog} s:\n{proc.communicate()[0]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, output)


def tiny_config(data: Path, out: Path, **extra) -> TrainConfig:
    return apply_overrides(TrainConfig(), {**SETTINGS, "data.train": str(data), "out": str(out), **extra})


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(run) / WEIGHTS))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("cells") / "train", 6, size=64, seed=3)


@pytest.fixture(scope="module")
def ddp_run(data, tmp_path_factory) -> tuple[Path, str]:
    """One epoch of one optimiser step on 2 processes x batch 2, launched with ``--nproc 2``."""
    root = tmp_path_factory.mktemp("ddp")
    config = save_config(tiny_config(data, root / "unused", **{"data.batch_size": 2}), root / "config.json")
    result = cli("train", str(data), "--out", str(root / "run"), "--preset", "tutorial",
                 "--config", str(config), "--no-progress", "--nproc", "2")
    assert result.returncode == 0, result.stdout
    return root / "run", result.stdout


def test_one_ddp_step_on_two_processes_equals_one_step_of_twice_the_batch(ddp_run, data, tmp_path):
    run, output = ddp_run
    assert "2 processes (gloo) x batch 2 = global batch 4" in output
    assert output.count("finished (done)") == 1  # rank 0 alone prints
    quiet = {"progress_bar": False, "log": lambda _: None}
    reference = train(tiny_config(data, tmp_path / "one", **{"data.batch_size": 4}), **quiet)
    half = train(tiny_config(data, tmp_path / "half", **{"data.batch_size": 2, "data.patches_per_epoch": 2}),
                 **quiet)
    ddp, one, rank0_only = last_weights(run), last_weights(reference.path), last_weights(half.path)
    assert ddp.keys() == one.keys() and not any(k.startswith("module.") for k in ddp)
    # float32 sums over 2 x 2 or 1 x 4 patches differ in the last bits (about 1e-8 after this step) ...
    for name in ddp:
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-5, atol=1e-6)
    # ... while a step on half the patches lands far away: the check can fail.
    assert max((ddp[k] - rank0_only[k]).abs().max().item() for k in ddp) > 3e-3
    ddp_row, one_row = Run.load(run).history[0], reference.history[0]
    assert (ddp_row["step"], ddp_row["batches"]) == (1, 2)  # 2 batches of 2 (one per rank) in 1 step
    assert ddp_row["loss"] == pytest.approx(one_row["loss"], rel=1e-5)
    assert ddp_row["dice"] == pytest.approx(one_row["dice"], abs=1e-3)  # validated on rank 0


def test_two_process_run_loads_predicts_and_resumes_on_one_process(ddp_run, data, tmp_path, capsys):
    run, _ = ddp_run
    loaded = Run.load(run)
    assert loaded.status == "done" and (run / "curves.png").is_file() and (run / "samples").is_dir()
    image = next((data / "images").iterdir())
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "masks")]) == 0
    assert (tmp_path / "masks" / f"{image.stem}.png").is_file()

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["train", "--resume", str(copy), "--budget.epochs", "2", "--no-progress"]) == 0
    assert "resuming a run of 2 process(es) on 1" in capsys.readouterr().out
    history = Run.load(copy).history
    # Epoch 1: 1 step of 2 x 2 patches (= 2 steps of the new batch of 2); epoch 2: 2 steps of 2.
    assert [(h["epoch"], h["step"], h["batches"]) for h in history] == [(1, 1, 2), (2, 4, 2)]
    assert history[1]["elapsed_s"] > history[0]["elapsed_s"]  # the clock travels in the checkpoint


@pytest.mark.parametrize("task", ["denoise", "generate"])
def test_restoration_and_generation_runs_train_on_two_processes(task, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    size = 16 if task == "denoise" else 8
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(images / f"{i}.png")
    if task == "denoise":
        options = ["--noise", "gaussian:25", "--preset", "tutorial", "--model.depth", "2",
                   "--model.base-channels", "4", "--model.dropout", "0", "--data.patch-size", "16",
                   "--data.normalize.mode", "fixed"]
    else:
        options = ["--generation.network.base-channels", "8", "--generation.network.channel-mults", "1,2",
                   "--generation.network.num-res-blocks", "1", "--generation.network.groups", "4",
                   "--generation.sample-steps", "2"]
    run = tmp_path / "run"
    result = cli("train", str(images), "--task", task, "--out", str(run), *options, "--data.batch-size", "2",
                 "--data.patches-per-epoch", "8", "--budget.epochs", "1", "--threads", "1", "--no-progress",
                 "--nproc", "2")
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("finished") == 1 and "2 processes" in result.stdout
    loaded = Run.load(run)
    assert loaded.status == "done" and loaded.task == ("restoration" if task == "denoise" else "generation")
    assert [h["step"] for h in loaded.history] == [2]  # 8 patches = 2 steps of 2 processes x 2


def test_all_ranks_train_with_rank_0s_config(data, tmp_path):
    """Ranks that resolve different configs (a plan measures speed) would run different numbers of
    steps and collectives; the trainer makes rank 0's config everybody's."""
    worker = Path(__file__).with_name("distributed_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(worker), str(data), str(tmp_path / "run")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "UNETKIT_DIST_TIMEOUT": "60"})
    try:
        output = proc.communicate(timeout=WATCHDOG_S)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"watchdog: the job ran over {WATCHDOG_S} s:\n{proc.communicate()[0]}")
    assert proc.returncode == 0, output
    run = Run.load(tmp_path / "run")
    assert run.config.data.patches_per_epoch == 4
    assert [h["step"] for h in run.history] == [1, 2]  # 4 patches = 1 step of 2 x 2 per epoch


def _worker(launcher: int, rank: int) -> int:
    """The pid of the training process of ``rank`` started (through torchrun's agent) by ``launcher``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise LookupError(f"no rank {rank} process under pid {launcher}")


def kill_rank_1_after_the_first_epoch(command: list[str], out: Path) -> tuple[int, int, str, float]:
    """Start ``command`` (a 2-process training into ``out``), SIGKILL its rank 1 once the first epoch is
    written, and wait for the job (watchdog: the whole group is killed on expiry). Returns the exit
    code, the killed pid, the output and the seconds from the kill to the end."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + WATCHDOG_S
        while not (out / "metrics.csv").is_file():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "watchdog: no epoch finished"
            time.sleep(0.1)
        victim = _worker(proc.pid, 1)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        output = proc.communicate(timeout=WATCHDOG_S)[0]
        return proc.returncode, victim, output, time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def test_a_killed_rank_ends_the_job_with_a_clear_error_and_no_hang(data, tmp_path):
    endless = tiny_config(data, tmp_path / "unused", **{"data.batch_size": 2, "budget.epochs": 10_000})
    config = save_config(endless, tmp_path / "config.json")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "unetkit", "train", str(data), "--out", str(out), "--preset", "tutorial",
               "--config", str(config), "--no-progress", "--nproc", "2"]
    code, victim, output, seconds = kill_rank_1_after_the_first_epoch(command, out)
    assert code == 1 and seconds < 60, output
    failure = rf"error: the 2-process job failed \(.*rank 1 \(pid {victim}\): killed by signal SIGKILL"
    assert re.search(failure, output), output
    assert latest_checkpoint(out) is not None  # what --resume continues from


def test_torchrun_max_restarts_resumes_from_the_last_checkpoint_after_a_rank_dies(data, tmp_path):
    twelve_epochs = tiny_config(data, tmp_path / "unused", **{"data.batch_size": 2, "budget.epochs": 12})
    config = save_config(twelve_epochs, tmp_path / "config.json")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--max-restarts", "1", "-m", "unetkit", "train", str(data), "--out", str(out),
               "--config", str(config), "--no-progress"]
    code, _, output, _ = kill_rank_1_after_the_first_epoch(command, out)
    assert code == 0, output
    run = Run.load(out)
    assert run.status == "done"
    assert [h["epoch"] for h in run.history] == list(range(1, 13)), output  # no epoch lost or repeated
    assert output.count("finished") == 1


def test_sharded_prediction_equals_one_process_skips_existing_and_has_spare_processes(ddp_run, tmp_path):
    run, _ = ddp_run
    images = sorted((write_synthetic_dataset(tmp_path / "test", 3, size=64, seed=9) / "images").iterdir())
    reference = tmp_path / "one"
    # One runtime for both: "auto" measures per thread count, and 1 or 4 processes have different ones.
    assert main(["predict", str(run), *map(str, images), "--out", str(reference), "--instances",
                 "--backend", "torch"]) == 0
    sharded = tmp_path / "four"
    sharded.mkdir()
    kept = [p for p in reference.iterdir() if p.name.startswith(images[0].stem)]
    for path in kept:  # the first image's outputs are already there
        shutil.copy2(path, sharded / path.name)
    written = {p.name: p.stat().st_mtime_ns for p in sharded.iterdir()}

    result = cli("predict", str(run), *map(str, images), "--out", str(sharded), "--instances", "--nproc", "4",
                 "--backend", "torch")
    assert result.returncode == 0, result.stdout
    assert "predicted 2 file(s)" in result.stdout and "skipped 1" in result.stdout
    assert result.stdout.count("pixels per class:") == 1  # one summary, from rank 0
    assert {p.name: p.stat().st_mtime_ns for p in sharded.iterdir() if p.name in written} == written
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in sharded.iterdir()) == names
    for name in names:  # masks, instances, object tables and the merged COCO file
        assert (sharded / name).read_bytes() == (reference / name).read_bytes(), name


def test_every_patch_and_every_file_goes_to_exactly_one_process(tmp_path):
    order = torch.randperm(21, generator=torch.Generator().manual_seed(0))
    shares = [rank_batches(order, 2, rank, 3) for rank in range(3)]
    assert all(len(s) == 6 for s in shares)  # 3 global batches of 3 x 2; the incomplete 4th dropped
    steps = [[x for r in range(3) for x in shares[r][2 * k: 2 * k + 2]] for k in range(3)]
    assert [x for step in steps for x in step] == order[:18].tolist()  # = one process, batch 6
    assert rank_batches(order, 4, 0, 1) == order[:20].tolist()

    files = [tmp_path / f"f{i}" for i in range(6)]
    for path, size in zip(files, (10, 50, 10, 10, 10, 10)):
        path.write_bytes(bytes(size))
    assert shard_files(files, 0, 2) == [files[1]]  # the big file is one process's share ...
    assert shard_files(files, 1, 2) == [files[0], *files[2:]]  # ... the small ones the other's
    shares = [shard_files(files, rank, 4) for rank in range(4)]
    assert sorted(f for s in shares for f in s) == files and all(shares)
    assert shard_files(files[:1], 2, 3) == [] and shard_files(files, 0, 1) == files


def test_bad_set_up_is_refused_with_a_clear_message(monkeypatch):
    assert choose_backend(torch.device("cpu")) == "gloo"
    monkeypatch.setenv("UNETKIT_DIST_BACKEND", "nccl")
    with pytest.raises(ValueError, match="NCCL backend runs on CUDA GPUs only"):
        choose_backend(torch.device("cpu"))
    with pytest.raises(ValueError, match="more processes than GPUs"):
        process_device(torch.device("cuda"), torch.cuda.device_count(), 2)
    with pytest.raises(ValueError, match="names one GPU"):
        process_device(torch.device("cuda:0"), 0, 2)
    argv = ["train", "D", "--nproc", "2", "--out", "R", "--nproc=3"]
    assert strip_nproc(argv) == ["train", "D", "--out", "R"]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
