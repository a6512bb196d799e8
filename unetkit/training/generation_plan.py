"""The plan for a generation (diffusion) run: the choices of DDPM / improved DDPM / ADM, sized for
the machine and the images.

- cosine noise schedule over 1000 steps, noise (epsilon) prediction, the mean squared error;
- weight averaging (EMA 0.999) on: diffusion samples come from the averaged weights;
- 10 % label dropout for class-conditional runs, so one network is both the conditional and the
  unconditional model that classifier-free guidance combines;
- Adam 1e-3 (DDPM's 2e-4 is for runs of days; the weight average smooths the faster steps) with
  warm-up and gradient clipping at 1;
- the whole image as the sample size for small images (digits, icons: at most 64 px), random
  crops otherwise (64 px on a CPU, 128 on a GPU), the network one level deeper per doubling;
- self-attention at the lowest level for whole-image generation, none for image-conditioned stages
  (super-resolution, mask-to-image) that sample whole images much larger than their training
  crops, where attention's cost grows with the square of the pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..config import GenerationConfig, TrainConfig
from ..data.check import check_dataset
from ..data.generation import find_generation_images
from ..data.io import read_image
from ..data.pairs import ImagePair, check_image_pairs
from ..data.samples import find_samples
from .planner import Machine, Plan, fingerprint_subset

#: Whole images up to this side are generated as they are; larger ones are cropped.
WHOLE_IMAGE_MAX = 64
#: Adam's learning rate: 5x DDPM's 2e-4, for budgets of minutes rather than days (EMA smooths it).
LEARNING_RATE = 1e-3
#: At least this many optimiser steps per epoch (an epoch ends with a validation and a sample grid).
MIN_STEPS_PER_EPOCH = 100


@dataclass
class GenerationFingerprint:
    """What the generation planner knows about a folder of images."""

    root: str
    n_images: int
    classes: list[str]
    channels: int
    dims: int
    dtype: str
    min_shape: tuple[int, ...]
    median_shape: tuple[int, ...]

    def describe(self) -> str:
        classes = f"{len(self.classes)} classes" if self.classes else "no classes"
        median, smallest = ("x".join(map(str, s)) for s in (self.median_shape, self.min_shape))
        return (
            f"{self.n_images} {self.dims}D images ({classes}), {self.channels} channel(s) {self.dtype}, "
            f"median size {median} (smallest {smallest})"
        )


def fingerprint_generation(root: Union[str, Path], condition: Optional[str]) -> GenerationFingerprint:
    """Fingerprint a generation dataset folder; every image is checked first, and one
    :class:`~unetkit.data.io.DataError` names every problem (a mask dataset: as ``check-data``)."""
    if condition == "mask":
        check_dataset(root).raise_if_problems()
        paths, classes = [s.image for s in find_samples(root)], []
    else:
        items, classes = find_generation_images(root)
        paths = [item.image for item in items]
        check_image_pairs([ImagePair(p) for p in paths])
    picked = fingerprint_subset(paths)
    images = [read_image(p) for p in picked]
    shapes = np.array([im.shape[1:] for im in images])
    return GenerationFingerprint(
        root=str(root), n_images=len(paths), classes=classes, channels=int(images[0].shape[0]),
        dims=shapes.shape[1], dtype=str(images[0].dtype),
        min_shape=tuple(int(v) for v in shapes.min(axis=0)),
        median_shape=tuple(int(v) for v in np.median(shapes, axis=0)),
    )


def plan_generation(
    train_dir: Union[str, Path],
    generation: GenerationConfig,
    *,
    val_dir: Optional[Union[str, Path]] = None,
    max_minutes: Optional[float] = None,
    machine: Optional[Machine] = None,
    base: Optional[TrainConfig] = None,
) -> Plan:
    """Propose a generation config for ``train_dir`` (see the module doc for the choices)."""
    machine = machine or Machine.detect()
    fp = fingerprint_generation(train_dir, generation.condition)
    config = base or TrainConfig()
    gpu = machine.device == "cuda"
    reasons: list[str] = []
    condition = generation.condition or ("class" if fp.classes else "none")
    conditioned_on_image = condition in ("low_res", "mask")
    smallest = min(fp.min_shape)
    if not conditioned_on_image and smallest <= WHOLE_IMAGE_MAX:
        patch = smallest
        reasons.append(f"samples of {patch} px: the whole (smallest) image")
    else:
        patch = min(128 if gpu else 64, smallest)
        reasons.append(
            f"training crops of {patch} px ({'GPU' if gpu else 'CPU'} choice, at most the smallest image)"
            + ("; samples take the size of their condition image" if conditioned_on_image else "")
        )
    levels = max(2, min(4, int(np.log2(max(patch, 4)))))
    multiple = 2 ** (levels - 1)
    if condition == "low_res":
        multiple = int(np.lcm(multiple, generation.scale))
    patch = max(multiple, patch // multiple * multiple)
    mults = (1, 2, 2, 2)[:levels]
    width = 64 if gpu else 32
    sides = [patch // 2**k for k in range(levels)]
    low = [k for k, side in enumerate(sides) if side <= max(4, patch // 4)]
    attention = () if conditioned_on_image else (low[0] if low else levels - 1,)
    # Crops of image-conditioned stages cost ~16x a digit per step: on a CPU one block per level
    # trains about twice the steps in the same minutes.
    blocks = 1 if conditioned_on_image and not gpu else 2
    network = dataclasses.replace(
        generation.network, base_channels=width, channel_mults=mults, num_res_blocks=blocks,
        attention_levels=attention, dropout=0.1 if fp.n_images < 5000 and not conditioned_on_image else 0.0,
    )
    reasons.append(
        f"diffusion U-Net: {levels} levels (widths {', '.join(str(width * m) for m in mults)}; "
        f"{'a GPU trains the wider net' if gpu else 'narrow: more CPU steps in the budget'}), {blocks} "
        f"residual block{'s' if blocks > 1 else ''} per level, "
        + (f"self-attention at level {attention[0]}" if attention else
           "no self-attention (whole images far larger than the crops are sampled)")
        + (", dropout 0.1 against overfitting a small data set" if network.dropout else "")
    )
    batch = 64 if patch <= 16 else (16 if patch <= 64 and gpu else 8)
    if fp.dims == 3:
        batch = max(2, batch // 8)
    pixels = int(np.prod(fp.median_shape)) * fp.n_images
    per_epoch = max(batch * MIN_STEPS_PER_EPOCH, round(pixels / patch**fp.dims / batch) * batch)
    reasons.append(
        f"batch {batch}, {per_epoch} crops per epoch: the training pixels about once, at least "
        f"{MIN_STEPS_PER_EPOCH} steps (each epoch ends with a validation and a grid of samples)"
    )
    g = dataclasses.replace(
        generation, condition=condition, network=network,
        classes=fp.classes if condition == "class" else None,
    )
    reasons.append(
        f"{g.schedule} noise schedule over {g.timesteps} steps, {g.prediction}-prediction (improved DDPM)"
        + (f"; {g.label_dropout:.0%} of the labels dropped for classifier-free guidance"
           if condition == "class" else "")
        + (f"; conditioning augmentation up to noise {g.condition_noise:g} (Cascaded Diffusion)"
           if condition == "low_res" else "")
    )
    epochs = 1000 if max_minutes else 50
    data = dataclasses.replace(
        config.data, train=str(train_dir), val=str(val_dir) if val_dir else config.data.val,
        patch_size=patch, batch_size=batch, patches_per_epoch=per_epoch,
    )
    config = dataclasses.replace(
        config, task="generation", generation=g, data=data,
        optim=dataclasses.replace(config.optim, name="adam", lr=LEARNING_RATE, grad_clip=1.0, ema=0.999),
        schedule=dataclasses.replace(config.schedule, name="cosine", warmup_steps=100, final_lr_fraction=0.1),
        budget=dataclasses.replace(config.budget, epochs=epochs, max_minutes=max_minutes, monitor="val_loss"),
    )
    reasons.append(
        f"Adam lr {LEARNING_RATE:g} (DDPM's 2e-4 is for runs of days), 100 warm-up steps, cosine decay "
        "to a tenth, gradient clipping at 1; weight "
        "average 0.999 is the saved model; the epoch with the lowest validation loss is kept"
        + (f"; the {max_minutes:g}-minute budget ends the run" if max_minutes else "")
    )
    return Plan(config=config, fingerprint=fp, machine=machine, reasons=reasons)
