"""Resumable training state in ``RUN/state/``, committed so that a crash never leaves a torn state.

Each save writes a new folder ``state/ckpt-<step>-<epoch>/`` (last weights as safetensors,
optimiser and RNG tensors via ``torch.save``, counters as JSON), then atomically rewrites
``state/latest.json`` to point at it, and only then removes older folders. The folder that
``latest.json`` names is never written into: a save at the same step and epoch (the end of a run)
writes ``ckpt-<step>-<epoch>-b/`` (and the next one the plain name again). A process killed at any
moment leaves ``latest.json`` naming a complete checkpoint. Nothing is unpickled on load
(``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..utils.atomic import atomic_path, atomic_write_json
from .averaging import WeightAverage

STATE_DIR = "state"
LATEST = "latest.json"
WEIGHTS = "model_last.safetensors"
AVERAGE = "model_average.safetensors"
TENSORS = "optimizer_rng.pt"
COUNTERS = "trainer.json"


@dataclass
class Progress:
    """Counters of a run: completed ``epoch``s, optimiser ``step``s, training seconds so far,
    the best monitored value and its epoch, and why the run stopped (``status``).
    ``epoch_batches``/``epoch_loss_sum``: what an interrupted epoch had trained (Ctrl-C), in batches
    of ``data.batch_size`` over all processes; ``world_size``: the processes that trained it."""

    epoch: int = 0
    step: int = 0
    epoch_batches: int = 0
    epoch_loss_sum: float = 0.0
    elapsed_s: float = 0.0
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    epochs_since_best: int = 0
    status: str = "running"
    history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def save_state(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    average: Optional[WeightAverage] = None,
) -> Path:
    """Commit the full training state (with the weight average, if any); returns the checkpoint folder."""
    state_dir = Path(run_dir) / STATE_DIR
    name = f"ckpt-{progress.step:08d}-{progress.epoch:05d}"
    committed = latest_checkpoint(run_dir)
    if committed is not None and committed.name == name:
        name += "-b"
    folder = state_dir / name
    if folder.exists():  # what a killed save left; latest.json does not name it
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _save_tensors(folder / WEIGHTS, model.state_dict())
    if average is not None:
        _save_tensors(folder / AVERAGE, average.state_dict())
    tensors: dict[str, Any] = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda_rng"] = torch.cuda.get_rng_state_all()
    with atomic_path(folder / TENSORS) as tmp:
        torch.save(tensors, tmp)
    atomic_write_json(folder / COUNTERS, asdict(progress))
    atomic_write_json(state_dir / LATEST, {"checkpoint": name})
    for old in state_dir.glob("ckpt-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The committed checkpoint folder (the one ``state/latest.json`` names), or ``None`` before the
    first save."""
    state_dir = Path(run_dir) / STATE_DIR
    latest = state_dir / LATEST
    return state_dir / json.loads(latest.read_text())["checkpoint"] if latest.is_file() else None


def has_state(run_dir: Path) -> bool:
    return (Path(run_dir) / STATE_DIR / LATEST).is_file()


def load_state(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    average: Optional[WeightAverage] = None,
) -> Progress:
    """Restore weights, optimiser, weight average and RNG from the committed checkpoint; returns the
    counters."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise FileNotFoundError(
            f"{Path(run_dir) / STATE_DIR / LATEST} not found: {run_dir} has no training state to resume "
            "(start a new run without --resume, or give the RUN folder of an earlier `unetkit train`)"
        )
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(folder / WEIGHTS), device=str(device)))
    if average is not None:
        if not (folder / AVERAGE).is_file():
            raise ValueError(f"{folder} holds no weight average (optim.ema): resume with the run's config")
        average.load_state_dict(load_file(str(folder / AVERAGE), device=str(device)))
    tensors = torch.load(folder / TENSORS, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(tensors["optimizer"])
    torch.set_rng_state(tensors["torch_rng"])
    if "cuda_rng" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda_rng"])
    return Progress(**json.loads((folder / COUNTERS).read_text()))
