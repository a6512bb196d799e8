"""A RUN folder written by ``unetkit train``, read back as one object.

Layout: ``model.safetensors`` + ``model.json`` (the best model), ``config.json`` (the full
:class:`~unetkit.config.TrainConfig`, whose ``task`` says what the run learns), ``classes.json``
(segmentation: the ``ClassInfo``), ``metrics.csv`` (one row per epoch), ``curves.png``, ``samples/``
(image | truth | prediction, or input | output | target crops, at the best epoch) and ``state/``
(what ``--resume`` needs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from ..checkpoint import MODEL_CONFIG_FILE, WEIGHTS_FILE, load_model
from ..config import TrainConfig, monitor_mode
from ..data.classes import ClassInfo
from .reporting import read_csv
from .state import COUNTERS, latest_checkpoint

CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.json"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
SAMPLES_DIR = "samples"


class Run:
    """A training run: ``run.config``, ``run.task``, ``run.classes`` (``None`` without classes),
    ``run.history`` (one dict per epoch), ``run.model`` (the best network, loaded on first use, eval
    mode) and ``run.best``."""

    def __init__(
        self,
        path: Union[str, Path],
        config: TrainConfig,
        classes: Optional[ClassInfo],
        history: list[dict[str, Any]],
        status: str = "done",
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.classes = classes
        self.history = history
        self.status = status
        self._model: Optional[nn.Module] = None

    @classmethod
    def load(cls, path: Union[str, Path]) -> Run:
        """Read a RUN folder; raises ``FileNotFoundError`` naming what is missing."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{path / CONFIG_FILE} not found: {path} is not a RUN folder of `unetkit train`"
            )
        config = TrainConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
        needed = [WEIGHTS_FILE, MODEL_CONFIG_FILE] + ([CLASSES_FILE] if config.task == "segmentation" else [])
        for name in needed:
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path / name} not found: {path} is not a finished RUN folder of `unetkit train` "
                    "(a run stopped before its first validation has no best model yet; "
                    "resume it with --resume)"
                )
        classes = (
            ClassInfo.from_dict(json.loads((path / CLASSES_FILE).read_text()))
            if (path / CLASSES_FILE).is_file() else None
        )
        history = read_csv(path / METRICS_FILE) if (path / METRICS_FILE).is_file() else []
        status = "done"
        checkpoint = latest_checkpoint(path)
        if checkpoint is not None and (checkpoint / COUNTERS).is_file():
            status = json.loads((checkpoint / COUNTERS).read_text()).get("status", status)
        return cls(path, config, classes, history, status)

    @property
    def task(self) -> str:
        """What the run learned: ``"segmentation"``, ``"restoration"`` or ``"generation"``."""
        return self.config.task

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = load_model(self.path)
        return self._model

    @property
    def best(self) -> Optional[dict[str, Any]]:
        """The ``metrics.csv`` row of the epoch whose model was kept (by ``budget.monitor``)."""
        metric = self.config.budget.monitor
        rows = [h for h in self.history if isinstance(h.get(metric), (int, float)) and h[metric] == h[metric]]
        if not rows:
            return None
        pick = min if monitor_mode(metric) == "min" else max
        return pick(rows, key=lambda h: h[metric])

    def predictor(self, **kwargs: Any):
        """A :class:`~unetkit.inference.Predictor` for this run (its normalisation and classes)."""
        from ..inference import Predictor

        return Predictor.from_run(self.path, **kwargs)

    def sampler(self, device: str = "auto"):
        """A :class:`~unetkit.inference.generate.DiffusionSampler` for a generation run."""
        from ..inference.generate import DiffusionSampler

        return DiffusionSampler.from_run(self.path, device=device)

    def __repr__(self) -> str:
        best = self.best
        metric = self.config.budget.monitor
        score = f", best {metric} {best[metric]:.4f} at epoch {best['epoch']}" if best else ""
        return f"Run({str(self.path)!r}, {len(self.history)} epochs{score}, {self.status})"
