"""Training and evaluation: the trainer, the RUN folder, the planner and the reports."""

from .run import Run
from .trainer import Trainer, TrainingDiverged, train

__all__ = ["Run", "Trainer", "TrainingDiverged", "train"]
