"""Generation: a diffusion U-Net that turns Gaussian noise into images (DDPM / improved DDPM / ADM).

A training pair is a clean image (a random crop) and a time step: the image is noised to that step
(:class:`~unetkit.diffusion.NoiseSchedule`) and the network learns to predict the noise (or ``v``),
given the step, the image's class (dropped to "no class" for a fraction of the images, which
classifier-free guidance needs) and, for image-conditioned runs, a condition image: the bicubic
low-resolution copy (a super-resolution stage, with conditioning augmentation) or the one-hot mask.
Validation is the same loss on held-out images at fixed steps and fixed noise (``val_loss``);
after each epoch a fixed-seed grid of samples is written to ``samples/epoch_NNN.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..data.check import check_dataset
from ..data.classes import ClassInfo
from ..data.detect import detect_classes
from ..data.generation import (
    GenerationItem,
    GenerationPatchDataset,
    LoadedImage,
    centre_crop,
    find_generation_images,
    generation_item,
    intensity_range,
    load_generation_item,
    read_images,
)
from ..data.io import DataError
from ..data.samples import find_samples, split_samples
from ..diffusion import NoiseSchedule
from ..models.diffusion import DiffusionUNet
from .base import LossFn, Task, TaskData, check_dims, patches_per_epoch

#: Metrics a generation run validates with.
GENERATION_METRICS = ("val_loss",)
#: Time steps (as fractions of the schedule) and seed of the validation loss.
VALIDATION_STEPS = tuple((k + 0.5) / 8 for k in range(8))
VALIDATION_SEED = 12345
#: Validation crops at most (the loss is a mean; more images add little).
MAX_VALIDATION_IMAGES = 256


def _find_items(
    config: TrainConfig, root: str
) -> tuple[list[GenerationItem], list[str], Optional[ClassInfo]]:
    """The items of ``root`` for the run's condition, the class names and (masks) the mask classes."""
    condition = config.generation.condition
    if condition == "mask":
        check_dataset(root).raise_if_problems()
        samples = find_samples(root)
        missing = [s.image.name for s in samples if s.mask is None]
        if missing:
            raise DataError(
                f"{root}: mask-conditioned generation needs a mask for every image; none for {missing[:5]}"
            )
        return [GenerationItem(s.image, None, s) for s in samples], [], detect_classes(samples)
    items, classes = find_generation_images(root)
    if condition == "class" and not classes:
        raise DataError(
            f"{root} has no class subfolders: class-conditional generation needs one subfolder of images per "
            "class (DATA/<class>/*.png); without classes use --condition none"
        )
    if condition in ("none", "low_res") and classes:
        items = [GenerationItem(item.image) for item in items]
        classes = []
    return items, classes, None


class GenerationTask(Task):
    """Noise to images (see the module doc)."""

    name = "generation"
    curve_metrics = ("val_loss",)

    def prepare_data(self, config: TrainConfig) -> TaskData:
        g = config.generation
        if not config.data.train:
            raise ValueError("no training data: give the image folder (unetkit train DATA) or set data.train")
        items, classes, mask_classes = _find_items(config, config.data.train)
        if g.condition is None:
            config = dataclasses.replace(
                config, generation=dataclasses.replace(g, condition="class" if classes else "none")
            )
        if config.data.val:
            val, val_classes, _ = _find_items(config, config.data.val)
            if val_classes and val_classes != classes:
                raise DataError(
                    f"{config.data.val} has classes {val_classes} but {config.data.train} has {classes}"
                )
        elif config.data.val_fraction > 0:
            items, val = split_samples(items, config.data.val_fraction, config.seed)
        else:
            val = []
        raws = read_images(items + val)
        channels = {r.shape[0] for r in raws}
        if len(channels) > 1:
            raise DataError(
                f"the images of {config.data.train} have different channel counts {sorted(channels)}: "
                "convert them to one (all grey or all RGB)"
            )
        dims = {r.ndim - 1 for r in raws}
        if len(dims) > 1:
            raise DataError(f"{config.data.train} mixes 2D images and 3D volumes")
        intensity = tuple(g.intensity) if g.intensity else intensity_range(raws)
        if intensity[1] <= intensity[0]:
            raise ValueError(f"generation.intensity must be (low, high) with low < high, got {intensity}")
        train = [load_generation_item(i, intensity, mask_classes) for i in items]
        held_out = [load_generation_item(i, intensity, mask_classes) for i in val]
        data = TaskData(train, held_out, channels.pop(), dims.pop(), classes=mask_classes)
        data.notes.append(
            f"generation: {len(classes) or 'no'} classes"
            + (f" ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})" if classes else "")
            + f"; intensities {intensity[0]:g}..{intensity[1]:g} mapped to [-1, 1]"
        )
        data.settings = dataclasses.replace(config.generation, intensity=intensity, classes=classes or None)
        return data

    def resolve_config(self, config: TrainConfig, data: TaskData) -> TrainConfig:
        """The network's channels, classes and condition inputs from the data; ``val_loss`` to monitor."""
        check_dims(config, data)
        g = data.settings
        if g.condition == "low_res" and data.dims != 2:
            raise ValueError("super-resolution stages take 2D images")
        cond_channels = {"low_res": data.in_channels, "mask": data.classes.num_classes if data.classes else 0}
        network = dataclasses.replace(
            g.network,
            in_channels=data.in_channels,
            out_channels=data.in_channels,
            dims=data.dims,
            num_classes=len(g.classes or []) if g.condition == "class" else 0,
            cond_channels=cond_channels.get(g.condition, 0),
            noise_level_input=g.condition == "low_res" and g.condition_noise > 0,
        )
        g = dataclasses.replace(g, network=network)
        multiple = 2 ** (len(network.channel_mults) - 1)
        patch = config.data.patch_size
        if patch % multiple:
            raise ValueError(
                f"data.patch_size {patch} must be a multiple of {multiple} "
                f"(the network has {len(network.channel_mults)} levels)"
            )
        if g.condition == "low_res" and patch % g.scale:
            raise ValueError(f"data.patch_size {patch} must be a multiple of generation.scale {g.scale}")
        budget = config.budget
        if budget.monitor not in GENERATION_METRICS:
            budget = dataclasses.replace(budget, monitor="val_loss")
        return dataclasses.replace(config, generation=g, budget=budget)

    def build_model(self, config: TrainConfig) -> nn.Module:
        return DiffusionUNet(config.generation.network)

    def build_loss(self, config: TrainConfig, data: TaskData) -> LossFn:
        g = config.generation
        schedule = NoiseSchedule(g.schedule, g.timesteps)
        null_class = g.network.num_classes

        def diffusion_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            x0 = batch["image"]
            n = x0.shape[0]
            t = torch.randint(0, g.timesteps, (n,), device=x0.device)
            noise = torch.randn_like(x0)
            kwargs = _condition_inputs(g, batch, training=True)
            if null_class:
                drop = torch.rand(n, device=x0.device) < g.label_dropout
                kwargs["y"] = torch.where(drop, torch.full_like(batch["label"], null_class), batch["label"])
            output = model(schedule.q_sample(x0, t, noise), t, **kwargs)
            return F.mse_loss(output.float(), schedule.training_target(x0, noise, t, g.prediction))

        return diffusion_loss

    def build_dataset(self, config: TrainConfig, data: TaskData, model: nn.Module) -> GenerationPatchDataset:
        g = config.generation
        patch = config.data.patch_size
        pixels = sum(int(np.prod(im.image.shape[1:])) for im in data.train)
        return GenerationPatchDataset(
            data.train,
            patch_size=patch,
            condition=g.condition,
            scale=g.scale,
            num_classes=g.network.num_classes,
            flips=g.condition in ("low_res", "mask"),
            seed=config.seed,
            patches_per_epoch=patches_per_epoch(config, pixels, (patch,) * data.dims),
        )

    def validation_items(self, config: TrainConfig, data: TaskData) -> list[Any]:
        """One batch of centre crops of the held-out images with fixed time steps and noise."""
        if not data.val:
            return []
        crops = [centre_crop(im, config.data.patch_size) for im in data.val[:MAX_VALIDATION_IMAGES]]
        items = _items(config, crops)
        batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        noise = [torch.randn(batch["image"].shape, generator=generator) for _ in VALIDATION_STEPS]
        return [{"batch": batch, "noise": noise}]

    def predictor(self, model: nn.Module, config: TrainConfig, data: TaskData, device: torch.device) -> Any:
        return _Validator(model, config, device)

    def validate(self, predictor: Any, items: Sequence[Any], data: TaskData) -> tuple[dict[str, float], list]:
        return {"val_loss": predictor.loss(items[0])}, []

    def save_samples(self, folder: Path, scored: Sequence[Any], data: TaskData, limit: int) -> None:
        """Nothing per validation image: the sample grids are drawn after every epoch (:meth:`end_epoch`)."""

    def end_epoch(self, model: nn.Module, config: TrainConfig, data: TaskData, out: Path, epoch: int) -> None:
        draw_epoch_grid(model, config, data, out / "samples" / f"epoch_{epoch:03d}.png")

    def run_files(self, data: TaskData) -> dict[str, dict]:
        from .segmentation import CLASSES_FILE

        return {CLASSES_FILE: data.classes.to_dict()} if data.classes is not None else {}

    def describe_network(self, config: TrainConfig) -> str:
        n = config.generation.network
        widths = "-".join(str(n.base_channels * m) for m in n.channel_mults)
        return f"diffusion U-Net widths {widths}, attention at levels {list(n.attention_levels)}"

    def describe(self, config: TrainConfig) -> str:
        g = config.generation
        what = {
            "class": f"class-conditional generation ({len(g.classes or [])} classes)",
            "none": "unconditional generation",
            "low_res": f"super-resolution x{g.scale} by diffusion",
            "mask": "mask-to-image generation",
        }[g.condition or "none"]
        return f"{what}, {g.schedule} schedule, {g.prediction}-prediction"


def _items(config: TrainConfig, crops: Sequence[LoadedImage]) -> list[dict[str, torch.Tensor]]:
    """The training items of whole crops, in their order, unflipped."""
    g = config.generation
    return [
        generation_item(c.image, c.mask, c.label, condition=g.condition, scale=g.scale,
                        num_classes=g.network.num_classes)
        for c in crops
    ]


def _condition_inputs(g: Any, batch: dict[str, torch.Tensor], *, training: bool) -> dict[str, torch.Tensor]:
    """The network's condition inputs of a batch; in training, a super-resolution stage's condition is
    augmented with Gaussian noise of a random level (the level is an input too)."""
    kwargs: dict[str, torch.Tensor] = {}
    if "cond_image" in batch:
        kwargs["cond_image"] = batch["cond_image"]
    if g.network.noise_level_input:
        n, device = batch["image"].shape[0], batch["image"].device
        level = torch.rand(n, device=device) * g.condition_noise
        level = level if training else torch.zeros_like(level)
        cond = kwargs["cond_image"]
        kwargs["cond_image"] = cond + level.view((n,) + (1,) * (cond.dim() - 1)) * torch.randn_like(cond)
        kwargs["noise_level"] = level
    return kwargs


class _Validator:
    """The validation loss of a network at fixed time steps and noise."""

    def __init__(self, model: nn.Module, config: TrainConfig, device: torch.device) -> None:
        self.model = model
        self.config = config
        self.device = device
        g = config.generation
        self.schedule = NoiseSchedule(g.schedule, g.timesteps)

    @torch.no_grad()
    def loss(self, item: dict[str, Any]) -> float:
        g = self.config.generation
        was_training = self.model.training
        self.model.eval()
        batch = {k: v.to(self.device) for k, v in item["batch"].items()}
        x0 = batch["image"]
        kwargs = _condition_inputs(g, batch, training=False)
        if g.network.num_classes:
            kwargs["y"] = batch["label"]
        losses = []
        for fraction, noise in zip(VALIDATION_STEPS, item["noise"]):
            t = torch.full((x0.shape[0],), int(fraction * g.timesteps), dtype=torch.long, device=self.device)
            noise = noise.to(self.device)
            output = self.model(self.schedule.q_sample(x0, t, noise), t, **kwargs)
            target = self.schedule.training_target(x0, noise, t, g.prediction)
            losses.append(float(F.mse_loss(output.float(), target)))
        self.model.train(was_training)
        return float(np.mean(losses))


def draw_epoch_grid(model: nn.Module, config: TrainConfig, data: TaskData, path: Path) -> Optional[Path]:
    """A fixed-seed grid of samples: 8 per class (one row each), 64 unconditional ones, or for
    image-conditioned runs condition | sample | real image for up to 4 held-out crops."""
    from ..inference.generate import DiffusionSampler, save_grid

    g = config.generation
    device = next(model.parameters()).device
    sampler = DiffusionSampler(model, g, config.data.patch_size, mask_classes=data.classes, device=device)
    was_training = model.training
    try:
        if g.condition in ("low_res", "mask"):
            source = data.val or data.train
            items = _items(config, [centre_crop(im, config.data.patch_size) for im in source[:4]])
            cond = torch.stack([it["cond_image"] for it in items])
            samples = sampler.sample(len(items), condition=cond, steps=g.sample_steps, seed=0)
            pictures = []
            for it, s in zip(items, samples):
                shown = it["cond_image"][:1] * 2 - 1 if g.condition == "mask" else it["cond_image"]
                pictures += [shown.numpy()[: s.shape[0]] if g.condition != "mask" else shown.numpy(),
                             s.numpy(), it["image"].numpy()]
            if data.dims != 2:
                return None
            pictures = [_as_channels(p, samples.shape[1]) for p in pictures]
            return save_grid(path, pictures, 3)
        if data.dims != 2:
            return None
        n_classes = len(g.classes or [])
        n = 8 * n_classes if n_classes else 64
        labels = torch.arange(n) // 8 if n_classes else None
        samples = sampler.sample(n, labels=labels, steps=g.sample_steps, seed=0)
        return save_grid(path, list(samples.numpy()), 8)
    finally:
        model.train(was_training)


def _as_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Show a 1-channel picture next to ``channels``-channel ones (grey repeated)."""
    if image.shape[0] == channels:
        return image
    return np.repeat(image[:1], channels, axis=0)
