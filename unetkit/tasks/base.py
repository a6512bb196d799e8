"""The seam between the shared trainer and what a run learns.

The trainer (:mod:`unetkit.training.trainer`) owns everything every run needs: the plan, the
budget and learning-rate clock, resume and safe checkpoints, weight averaging, precision,
progress bars and curves, the RUN folder. A :class:`Task` says the rest: which files make a
training pair, the loss, the validation metrics, and what the network's output becomes. A new
task subclasses :class:`Task` and is named in :data:`unetkit.config.TASKS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import TrainConfig

#: ``loss(network, batch on the device) -> scalar``: the task decides how the network is called
#: (an image-to-image task on ``batch["image"]``; a diffusion model on a noised image and a time step).
#: The trainer adds ``batch["progress"]``, the run's progress in [0, 1] (the learning-rate clock), for
#: losses whose weights change over the run.
LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


def output_loss(loss: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]) -> LossFn:
    """The :data:`LossFn` of a task whose network maps ``batch["image"]`` to the output ``(N, K, *S)``
    that ``loss(output, batch)`` scores."""

    def run(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss(model(batch["image"]), batch)

    return run


@dataclass
class TaskData:
    """A run's checked training and validation items (task-specific records), and the image geometry.

    ``classes`` is the segmentation task's ``ClassInfo`` (``None`` for tasks without classes);
    ``scale`` the restoration task's output pixels per input pixel (from its pairs or config);
    ``settings`` what else a task reads from the data for :meth:`Task.resolve_config` and validation
    (generation: its ``GenerationConfig`` with the class names and intensity range; restoration: its
    mode, which decides how images without clean targets are scored).
    """

    train: list[Any]
    val: list[Any]
    in_channels: int
    dims: int
    classes: Any = None
    scale: int = 1
    notes: list[str] = field(default_factory=list)
    settings: Any = None


class Task(ABC):
    """What changes between segmentation, restoration and the next task (see the module doc)."""

    #: The value of ``TrainConfig.task``.
    name: str
    #: Validation metrics drawn in ``curves.png`` and printed after each epoch, when present.
    curve_metrics: tuple[str, ...] = ()

    @abstractmethod
    def prepare_data(self, config: TrainConfig) -> TaskData:
        """Check the dataset folders (every problem at once, as ``unetkit check-data``) and split them."""

    @abstractmethod
    def resolve_config(self, config: TrainConfig, data: TaskData) -> TrainConfig:
        """Fit the network's input and output channels (and anything else) to the data."""

    def build_model(self, config: TrainConfig) -> nn.Module:
        """The network ``config`` describes (the U-Net family of ``config.model``)."""
        from ..models import build_model

        return build_model(config.model)

    @abstractmethod
    def build_loss(self, config: TrainConfig, data: TaskData) -> LossFn:
        """The training loss on a batch."""

    @abstractmethod
    def build_dataset(self, config: TrainConfig, data: TaskData, model: nn.Module) -> Dataset:
        """Training items ``{"image": (C, *P), ...}`` for one epoch; ``set_epoch(e)`` draws anew."""

    @abstractmethod
    def validation_items(self, config: TrainConfig, data: TaskData) -> list[Any]:
        """Whole validation images, loaded once, in the form :meth:`validate` takes."""

    @abstractmethod
    def predictor(self, model: nn.Module, config: TrainConfig, data: TaskData, device: torch.device) -> Any:
        """The :class:`~unetkit.inference.Predictor` that validates ``model`` as it will be used."""

    @abstractmethod
    def validate(self, predictor: Any, items: Sequence[Any], data: TaskData) -> tuple[dict[str, float], list]:
        """Mean validation metrics and the per-image results (for :meth:`save_samples`)."""

    @abstractmethod
    def save_samples(self, folder: Path, scored: Sequence[Any], data: TaskData, limit: int) -> None:
        """Pictures of the first ``limit`` validation results, for a person to look at."""

    def end_epoch(  # noqa: B027 (an optional hook: most tasks write nothing more)
        self, model: nn.Module, config: TrainConfig, data: TaskData, out: Path, epoch: int
    ) -> None:
        """Anything the task writes after every epoch (``model``: the evaluated network; ``epoch``
        counts from 1)."""

    def end_training(  # noqa: B027 (an optional hook)
        self, model: nn.Module, config: TrainConfig, data: TaskData, items: Sequence[Any], out: Path,
        device: torch.device,
    ) -> Optional[str]:
        """Anything the task measures and writes once training is over (``model``: the saved, best
        network; ``items``: the validation items); returns a line for the log, or ``None``."""

    def run_files(self, data: TaskData) -> dict[str, dict]:
        """Extra JSON files of the RUN folder (name -> content), e.g. the classes."""
        return {}

    def describe_network(self, config: TrainConfig) -> str:
        """The network in a few words, for the training summary line."""
        m = config.model
        return f"{m.architecture} depth {m.depth} width {m.base_channels}"

    def describe(self, config: TrainConfig) -> str:
        """A few words for the training summary line."""
        return self.name


def check_dims(config: TrainConfig, data: TaskData) -> None:
    """Raise ``ValueError`` when the images' dimensionality differs from ``model.dims``."""
    if config.model.dims != data.dims:
        raise ValueError(
            f"the images of {config.data.train} are {data.dims}D but model.dims is {config.model.dims}: "
            f"set --model.dims {data.dims}"
        )


def patches_per_epoch(config: TrainConfig, pixels: int, patch: Sequence[int]) -> int:
    """``data.patches_per_epoch``, or enough batches to cover ``pixels`` training pixels about once."""
    cfg = config.data
    if cfg.patches_per_epoch is not None:
        return cfg.patches_per_epoch
    per_patch = 1
    for p in patch:
        per_patch *= p
    return max(cfg.batch_size, round(pixels / per_patch) // cfg.batch_size * cfg.batch_size)
