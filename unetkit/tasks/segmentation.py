"""Segmentation: an image and its mask make a pair, the loss is cross-entropy/Dice, the output a mask.

Semantic (the masks' classes), or for instance segmentation the three-class target (background /
interior / border from the objects), the flows target (foreground and a flow field towards each
object's centre, :mod:`unetkit.flows`) or the distance target (foreground and the distance to the
object's outline); see :mod:`unetkit.data` for the layouts and encodings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data.check import check_dataset
from ..data.detect import detect_classes
from ..data.instances import MAP_TARGETS, map_channels
from ..data.io import read_image
from ..data.patches import PatchDataset
from ..data.samples import find_samples, load_sample, split_samples
from ..data.weights import BorderWeightConfig
from ..losses import ForegroundMapLoss, SegmentationLoss
from ..utils.atomic import atomic_write_json
from .base import LossFn, Task, TaskData, check_dims, output_loss, patches_per_epoch

CLASSES_FILE = "classes.json"


def _require_ok(root: str) -> None:
    check_dataset(root).raise_if_problems()


class SegmentationTask(Task):
    """Pixels to classes (see the module doc)."""

    name = "segmentation"
    curve_metrics = ("dice", "iou", "mean_iou", "pixel_error", "rand_error")

    def prepare_data(self, config: TrainConfig) -> TaskData:
        if not config.data.train:
            raise ValueError(
                "no training data: give the dataset folder (unetkit train DATA) or set data.train"
            )
        _require_ok(config.data.train)
        train = find_samples(config.data.train)
        if config.data.val:
            _require_ok(config.data.val)
            val = find_samples(config.data.val)
        elif config.data.val_fraction > 0:
            train, val = split_samples(train, config.data.val_fraction, config.seed)
        else:
            val = []
        classes = detect_classes(train + val)
        first = read_image(train[0].image)
        return TaskData(train, val, int(first.shape[0]), first.ndim - 1, classes)

    def resolve_config(self, config: TrainConfig, data: TaskData) -> TrainConfig:
        """Input channels from the images; output classes from the masks (a binary problem keeps a
        1-channel sigmoid head or a 2-channel softmax head, whichever the config asks for; a flows or
        distance network has a foreground logit and its maps: one flow component per axis, or one
        distance)."""
        model = config.model
        n_classes = 3 if config.data.target == "three_class" else data.classes.num_classes
        out = model.num_classes if (n_classes == 2 and model.num_classes in (1, 2)) else n_classes
        if config.data.target in MAP_TARGETS:
            out = 1 + map_channels(config.data.target, data.dims)
        check_dims(config, data)
        return dataclasses.replace(
            config, model=dataclasses.replace(model, in_channels=data.in_channels, num_classes=out)
        )

    def build_loss(self, config: TrainConfig, data: TaskData) -> LossFn:
        if config.data.target in MAP_TARGETS:
            map_loss = ForegroundMapLoss(config.loss, ignore_index=data.classes.ignore_index)

            def foreground_map_loss(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
                return map_loss(output, batch["mask"], batch["maps"], batch.get("weight"))

            return output_loss(foreground_map_loss)
        loss = SegmentationLoss(config.loss, ignore_index=data.classes.ignore_index)

        def segmentation_loss(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return loss(output, batch["mask"], batch.get("weight"))

        return output_loss(segmentation_loss)

    def build_dataset(self, config: TrainConfig, data: TaskData, model: nn.Module) -> PatchDataset:
        cfg = config.data
        dims = config.model.dims
        patch = (cfg.patch_size,) * dims
        model.check_input_size(patch)
        output = model.output_size(patch) if model.context() > 0 else None
        pixels = sum(int(np.prod(read_image(s.image).shape[1:])) for s in data.train)
        return PatchDataset(
            data.train,
            data.classes,
            patch_size=patch,
            normalize=cfg.normalize,
            augment=config.augment,
            target=cfg.target,
            weight_map=BorderWeightConfig(w0=cfg.w0, sigma=cfg.sigma) if cfg.weight_map else None,
            foreground_oversample=cfg.foreground_oversample,
            seed=config.seed,
            patches_per_epoch=patches_per_epoch(config, pixels, patch),
            output_size=(output,) * dims if isinstance(output, int) else output,
            object_diameter=cfg.object_diameter,
        )

    def validation_items(self, config: TrainConfig, data: TaskData) -> list[Any]:
        return [(s.name, *load_sample(s, data.classes, config.data.normalize)) for s in data.val]

    def predictor(
        self, model: nn.Module, config: TrainConfig, data: TaskData, device: torch.device,
        precision: Optional[str] = None,
    ) -> Any:
        """The validating Predictor, in the run's prediction precision unless ``precision`` is given."""
        from ..inference import Predictor
        from ..precision import prediction_precision

        return Predictor(
            model, device=device, classes=data.classes,
            object_diameter=config.data.object_diameter, target=config.data.target,
            precision=precision or prediction_precision(config.precision),
        )

    def end_training(
        self, model: nn.Module, config: TrainConfig, data: TaskData, items: Sequence[Any], out: Path,
        device: torch.device,
    ) -> Optional[str]:
        """Measure whether the network keeps its labels in bfloat16 on the validation images and record it
        (:mod:`unetkit.inference.agreement`): ``precision="auto"`` relies on it."""
        from ..inference.agreement import AGREEMENT_FILE, MIN_AGREEMENT, agreement_record, label_agreement

        if not items:
            return None
        def predictor(precision: str) -> Any:
            return self.predictor(model, config, data, device, precision)

        agreement = label_agreement(predictor, [item[1] for item in items])
        atomic_write_json(out / AGREEMENT_FILE, agreement_record(agreement, len(items)))
        use = "uses reduced precision" if agreement >= MIN_AGREEMENT else "stays float32"
        return (f"bfloat16 prediction keeps {agreement:.4%} of the validation labels: --precision auto {use} "
                f"for this run ({AGREEMENT_FILE})")

    def validate(self, predictor: Any, items: Sequence[Any], data: TaskData) -> tuple[dict[str, float], list]:
        from ..training.evaluation import score_images, summary_of

        scored = score_images(predictor, items, data.classes, rand_sweep=False)
        summary = summary_of(scored, data.classes)
        keep = {k: v for k, v in summary.items() if isinstance(v, float) and not k.startswith("global_pixel")}
        return keep, scored

    def save_samples(self, folder: Path, scored: Sequence[Any], data: TaskData, limit: int) -> None:
        from ..training.reporting import save_overlay

        for s in scored[:limit]:
            save_overlay(folder / f"{s.name}.png", s.image, s.truth, s.pred, data.classes)

    def run_files(self, data: TaskData) -> dict[str, dict]:
        return {CLASSES_FILE: data.classes.to_dict()}

    def describe(self, config: TrainConfig) -> str:
        target = {"three_class": " (three-class target)", "flows": " (flows target)",
                  "distance": " (distance target)"}
        return "segmentation" + target.get(config.data.target, "")
