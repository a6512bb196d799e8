"""Tasks: what a run learns, on the one shared trainer, predictor, export and server.

* :mod:`.segmentation`: pixels to classes (semantic; objects through the three-class target);
* :mod:`.restoration`: images to images (paired restoration, denoising, Noise2Void,
  super-resolution);
* :mod:`.generation`: noise to images (a diffusion U-Net; class-, low-resolution- or mask-conditioned).

:class:`~.base.Task` is the seam; :func:`get_task` maps ``TrainConfig.task`` to its task.
"""

from __future__ import annotations

from .base import Task, TaskData


def get_task(name: str) -> Task:
    """The :class:`Task` for ``TrainConfig.task`` (one of :data:`unetkit.config.TASKS`)."""
    if name == "segmentation":
        from .segmentation import SegmentationTask

        return SegmentationTask()
    if name == "restoration":
        from .restoration import RestorationTask

        return RestorationTask()
    if name == "generation":
        from .generation import GenerationTask

        return GenerationTask()
    from ..config import TASKS

    raise ValueError(f"task must be one of {', '.join(TASKS)}; got {name!r}")


__all__ = ["Task", "TaskData", "get_task"]
