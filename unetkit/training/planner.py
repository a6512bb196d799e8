"""Self-configuration: fingerprint the dataset and the machine, then propose a training plan.

Like nnU-Net's planning, but for any PNG/TIFF/NIfTI folder and a wall-clock budget: the patch
size follows the image and object sizes and the device, the network's depth follows the patch,
its width the device, the normalisation the image type, the loss the class balance, the object
scale the spread of object sizes between images, and the number of epochs a short timing of the
planned network on this machine. Every value is a plain config field, so any of them can be
overridden afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data.check import check_dataset
from ..data.instances import map_channels
from ..data.io import read_image
from ..data.membrane import membrane_class_of, membrane_class_of_dataset
from ..data.normalize import NormalizeConfig
from ..data.samples import find_samples, load_instances, load_labels
from ..data.scale import equivalent_diameters, median_object_diameter, scale_factor
from ..losses import LossConfig
from ..models import build_model
from ..precision import autocast, mixed_precision_dtype
from .target_plan import choose_target, object_crowding

#: Time budget used to size the plan when none is given (the run is then limited by epochs).
DEFAULT_PLAN_MINUTES = 30.0
#: Share of the budget planned for training steps; the rest is validation and saving.
TRAIN_SHARE = 0.9
MAX_IMAGES_FINGERPRINTED = 50
T = TypeVar("T")
#: Shortest planned epoch (training seconds); shorter ones would spend much of the budget validating.
MIN_EPOCH_SECONDS = 30.0
#: Validation seconds per validated pixel, in units of training-step seconds per trained pixel
#: (a forward pass without the backward, plus the metrics).
VALIDATION_COST = 0.5
#: Object scale is set when the images' median object diameters spread more than this
#: (90th over 10th percentile), measured on at least OBJECT_SCALE_MIN_IMAGES images.
OBJECT_SCALE_SPREAD = 3.0
OBJECT_SCALE_MIN_IMAGES = 5


@dataclass
class Machine:
    """What the plan is sized for."""

    device: str
    cpus: int
    memory_gb: float
    gpu: Optional[str] = None
    gpu_memory_gb: Optional[float] = None

    @classmethod
    def detect(cls) -> Machine:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError, AttributeError):
            memory = math.nan
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return cls("cuda", cpus, memory, props.name, props.total_memory / 2**30)
        return cls("cpu", cpus, memory)

    def describe(self) -> str:
        gpu = f", GPU {self.gpu} ({self.gpu_memory_gb:.0f} GB)" if self.gpu else ", no GPU"
        return f"{self.cpus} CPU cores, {self.memory_gb:.0f} GB memory{gpu}"


@dataclass
class Fingerprint:
    """What the planner knows about a dataset."""

    root: str
    n_images: int
    dims: int
    channels: int
    dtype: str
    median_shape: tuple[int, ...]
    min_shape: tuple[int, ...]
    class_names: list[str]
    class_fractions: list[float]
    intensity: dict[str, float]
    median_object_diameter: Optional[float]
    full_range_fraction: float = 0.0
    image_object_diameters: list[float] = field(default_factory=list)
    membrane_class: Optional[int] = None
    object_crowding: list[tuple[float, float]] = field(default_factory=list)

    def describe(self) -> str:
        fractions = ", ".join(f"{n} {f:.1%}" for n, f in zip(self.class_names, self.class_fractions))
        obj = (
            f"median object diameter {self.median_object_diameter:.0f} px"
            if self.median_object_diameter
            else "no separate objects measured"
        )
        return (
            f"{self.n_images} {self.dims}D images, {self.channels} channel(s) {self.dtype}, median size "
            f"{'x'.join(map(str, self.median_shape))} (smallest {'x'.join(map(str, self.min_shape))}); "
            f"classes: {fractions}; intensities p1 {self.intensity['p1']:.4g}, "
            f"p99 {self.intensity['p99']:.4g}; "
            f"{obj}"
        )


@dataclass
class Plan:
    """The proposed config and the reason for each choice."""

    config: TrainConfig
    fingerprint: Any
    machine: Machine
    reasons: list[str] = field(default_factory=list)
    seconds_per_step: Optional[float] = None

    def format(self) -> str:
        c = self.config
        task = ""
        if c.task != "segmentation":
            from ..tasks import get_task

            task = f"  task      {get_task(c.task).describe(c)}"
        model = (
            f"  model     {c.model.architecture}, depth {c.model.depth}, base width {c.model.base_channels}, "
            f"{c.model.padding} padding, {c.model.norm} norm, {c.model.num_classes} output channel(s)"
        )
        if c.task == "generation":
            n = c.generation.network
            widths = ", ".join(str(n.base_channels * m) for m in n.channel_mults)
            model = (
                f"  model     diffusion U-Net, widths {widths}, {n.num_res_blocks} residual blocks per "
                f"level, attention at levels {list(n.attention_levels)}"
            )
        lines = [
            f"dataset: {self.fingerprint.describe()}",
            f"machine: {self.machine.describe()}",
            "",
            "plan:",
            *([task] if task else []),
            model,
            f"  patches   {c.data.patch_size} px, batch {c.data.batch_size}, "
            f"{c.data.patches_per_epoch} patches per epoch"
            + (f", objects resized to {c.data.object_diameter:g} px" if c.data.object_diameter else ""),
            f"  normalise {c.data.normalize.mode}" if c.task != "generation" else
            "  normalise the data's intensity range to [-1, 1]",
            f"  loss      {c.loss.name}" if c.task != "generation" else
            f"  loss      mean squared error of the {c.generation.prediction} prediction",
            f"  optimiser {c.optim.name} lr {c.optim.lr:g}, {c.schedule.name} schedule, "
            + (f"weight average {c.optim.ema:g}, " if c.optim.ema else "")
            + f"{c.schedule.warmup_steps} warm-up steps",
            f"  budget    {c.budget.epochs} epochs"
            + (f" within {c.budget.max_minutes:g} minutes" if c.budget.max_minutes else ""),
            "",
            "why:",
        ]
        lines += [f"  - {r}" for r in self.reasons]
        lines += [
            "",
            "Override any value, e.g. `unetkit train DATA --model.base-channels 32 --data.patch-size 128`.",
        ]
        return "\n".join(lines)


def fingerprint_subset(items: Sequence[T], rng: Optional[np.random.Generator] = None) -> list[T]:
    """All ``items``, or a sample of :data:`MAX_IMAGES_FINGERPRINTED` of them in their order (drawn with
    ``rng``, default seeded 0)."""
    if len(items) <= MAX_IMAGES_FINGERPRINTED:
        return list(items)
    rng = rng if rng is not None else np.random.default_rng(0)
    return [items[i] for i in sorted(rng.choice(len(items), MAX_IMAGES_FINGERPRINTED, replace=False))]


def fingerprint_dataset(root: Union[str, Path]) -> tuple[Fingerprint, Any]:
    """Fingerprint a dataset folder; returns it with the data area's ``CheckReport`` (raises on problems)."""
    report = check_dataset(root)
    report.raise_if_problems()
    classes = report.classes
    samples = find_samples(root)
    rng = np.random.default_rng(0)
    picked = fingerprint_subset(samples, rng)  # the same rng then samples pixel values
    shapes, values, diameters, image_diameters, spans, membranes, crowding = [], [], [], [], [], [], []
    counts = np.zeros(classes.num_classes, dtype=np.int64)
    dtype = ""
    channels = 1
    for sample in picked:
        image = read_image(sample.image)
        dtype, channels = str(image.dtype), int(image.shape[0])
        shapes.append(image.shape[1:])
        flat = image.reshape(image.shape[0], -1)
        values.append(flat[:, rng.integers(0, flat.shape[1], size=min(flat.shape[1], 20000))])
        low, high = np.percentile(values[-1], [1, 99])
        spans.append(float(high - low))
        labels = load_labels(sample, classes, image.shape[1:])
        valid = labels[labels != classes.ignore_index] if classes.ignore_index is not None else labels.ravel()
        counts += np.bincount(valid.ravel(), minlength=classes.num_classes)[: classes.num_classes]
        membranes.append(membrane_class_of(labels, classes.num_classes, classes.ignore_index))
        if classes.num_classes == 2 or sample.instances is not None:
            instances = load_instances(sample, labels, classes)
            found = equivalent_diameters(instances)
            crowding.append(object_crowding(instances))
            diameters += found.tolist()
            if found.size:
                image_diameters.append(float(np.median(found)))
    pixels = np.concatenate(values, axis=1).astype(np.float64)
    shapes_arr = np.array(shapes)
    fractions = (counts / max(counts.sum(), 1)).tolist()
    fp = Fingerprint(
        root=str(root),
        n_images=len(samples),
        dims=shapes_arr.shape[1],
        channels=channels,
        dtype=dtype,
        median_shape=tuple(int(v) for v in np.median(shapes_arr, axis=0)),
        min_shape=tuple(int(v) for v in shapes_arr.min(axis=0)),
        class_names=list(classes.names),
        class_fractions=[float(f) for f in fractions],
        intensity={
            "p1": float(np.percentile(pixels, 1)),
            "p99": float(np.percentile(pixels, 99)),
            "mean": float(pixels.mean()),
            "std": float(pixels.std()),
        },
        median_object_diameter=float(np.median(diameters)) if diameters else None,
        image_object_diameters=image_diameters,
        full_range_fraction=float(np.mean([s >= 200 for s in spans])) if dtype == "uint8" else 0.0,
        membrane_class=membrane_class_of_dataset(membranes),
        object_crowding=[c for c in crowding if c is not None],
    )
    return fp, report


def _object_scale(fp: Fingerprint) -> tuple[Optional[float], str]:
    """``data.object_diameter`` for a dataset (``None``: each image at its own scale) and why."""
    per_image = np.array(fp.image_object_diameters)
    if per_image.size < OBJECT_SCALE_MIN_IMAGES:
        return None, "objects at each image's own scale: too few images with objects to compare their sizes"
    low, middle, high = np.percentile(per_image, [10, 50, 90])
    spread = high / low
    sizes = f"the images' median object diameters run {low:.0f}-{high:.0f} px (10th-90th percentile)"
    if spread < OBJECT_SCALE_SPREAD:
        return None, f"objects at each image's own scale: {sizes}, {spread:.1f}x, close enough"
    diameter = float(round(middle))
    return diameter, (
        f"object diameter {diameter:g} px: {sizes}, {spread:.1f}x apart, so every image is resized to "
        f"objects of the typical {diameter:g} px for training, and at prediction after a first pass "
        "measures them"
    )


def _passes(diameter: float, object_diameter: Optional[float], dims: int) -> float:
    """Pixels the predictor goes through per pixel of an image whose objects measure ``diameter``:
    1, plus the resized second pass when the run has an object scale (see :mod:`..data.scale`)."""
    if not object_diameter:
        return 1.0
    factor = scale_factor(diameter, object_diameter)
    return 1.0 if factor == 1.0 else 1.0 + factor**dims


def _validation_pixels(root: Union[str, Path], classes: Any, object_diameter: Optional[float]) -> float:
    """Pixels (voxels) the predictor goes through to validate on the images of a dataset folder."""
    total = 0.0
    for sample in find_samples(root):
        image = read_image(sample.image)
        diameter = math.nan
        if object_diameter:
            labels = load_labels(sample, classes, image.shape[1:])
            diameter = median_object_diameter(load_instances(sample, labels, classes))
        total += np.prod(image.shape[1:]) * _passes(diameter, object_diameter, image.ndim - 1)
    return total


def _round_down(value: int, multiple: int) -> int:
    return max(multiple, value // multiple * multiple)


def time_training_step(
    config: TrainConfig,
    device: str,
    repeats: int = 2,
    loss_of: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None,
) -> float:
    """Seconds per training step of the planned network and batch on this machine (after a warm-up),
    in the memory format and precision the trainer will use. ``loss_of(model, patches)`` is the task's
    loss on a batch of patches ``(N, C, *P)`` where it costs more than one pass (default: the mean square
    of the output)."""
    model = build_model(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    size = (config.data.patch_size,) * config.model.dims
    x = torch.randn(config.data.batch_size, config.model.in_channels, *size, device=device)
    if config.model.dims == 2:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    amp_dtype = mixed_precision_dtype(torch.device(device), config.precision)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with autocast(torch.device(device), amp_dtype):
            loss = loss_of(model, x) if loss_of else model(x).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def fit_epochs(
    config: TrainConfig,
    reasons: list[str],
    machine: Machine,
    max_minutes: Optional[float],
    val_pixels: Optional[float],
    loss_of: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None,
) -> tuple[TrainConfig, Optional[float]]:
    """Set the epoch length and count of a planned ``config`` by timing its training step here (skipped
    when ``val_pixels`` is ``None``; ``loss_of`` as for :func:`time_training_step`): epochs long enough
    that validating ``val_pixels`` pixels after each is a small share, as many as ``max_minutes`` holds;
    appends the reasons. Returns the config and the seconds per step."""
    data = config.data
    batch, patch, dims = data.batch_size, data.patch_size, config.model.dims
    per_epoch = data.patches_per_epoch
    steps_per_epoch = per_epoch // batch
    minutes = max_minutes or DEFAULT_PLAN_MINUTES
    epochs = config.budget.epochs
    seconds = None
    if val_pixels is not None:
        seconds = time_training_step(config, machine.device, loss_of=loss_of)
        val_seconds = VALIDATION_COST * val_pixels / (batch * patch**dims) * seconds
        min_epoch = max(MIN_EPOCH_SECONDS, 10 * val_seconds)
        short = math.ceil(min_epoch / seconds)
        if steps_per_epoch < short:
            steps_per_epoch = short
            per_epoch = short * batch
            config = dataclasses.replace(config, data=dataclasses.replace(data, patches_per_epoch=per_epoch))
            reasons.append(
                f"{per_epoch} patches per epoch instead: an epoch of at least {min_epoch:.0f} s of training "
                f"keeps the whole-image validation after each epoch (about {val_seconds:.0f} s) a small "
                "share of the time"
            )
        val_share = 0.15 if (data.val or data.val_fraction > 0) else 0.0
        epoch_seconds = steps_per_epoch * seconds * (1 + val_share)
        epochs = max(1, int(minutes * 60 * TRAIN_SHARE / epoch_seconds))
        reasons.append(
            f"about {epochs} epochs: one step takes {seconds:.2f} s here now, an epoch ({steps_per_epoch} "
            f"steps + validation) about {epoch_seconds:.0f} s, {minutes:g} minutes "
            f"{'budget' if max_minutes else '(default plan budget)'}"
        )
    if max_minutes:
        # The clock, not the epoch count, ends the run and drives the schedule: a machine that is
        # busier or idler than during the timing above still gets its whole budget.
        epochs = max(100, 4 * epochs)
        reasons.append(f"epoch cap {epochs}: the {max_minutes:g}-minute budget ends the run and the schedule")
    budget = dataclasses.replace(config.budget, epochs=epochs, max_minutes=max_minutes)
    return dataclasses.replace(config, budget=budget), seconds


def adam_cosine(config: TrainConfig, reasons: list[str], monitor: str, warmup: int = 20) -> TrainConfig:
    """The planned optimiser and schedule (Adam 1e-3, warm-up, cosine to the end) and the kept epoch."""
    config = dataclasses.replace(
        config,
        optim=dataclasses.replace(config.optim, name="adam", lr=1e-3),
        schedule=dataclasses.replace(config.schedule, name="cosine", warmup_steps=warmup),
        budget=dataclasses.replace(config.budget, monitor=monitor),
    )
    reasons.append(
        f"Adam lr 1e-3 with {warmup} warm-up steps and a cosine decay to the end of the "
        f"{'time budget' if config.budget.max_minutes else 'epochs'}; the best epoch by validation "
        f"{monitor} is kept"
    )
    return config


def plan_training(
    train_dir: Union[str, Path],
    *,
    val_dir: Optional[Union[str, Path]] = None,
    max_minutes: Optional[float] = None,
    machine: Optional[Machine] = None,
    base: Optional[TrainConfig] = None,
    measure: bool = True,
    target: Optional[str] = None,
) -> Plan:
    """Propose a config for ``train_dir`` on ``machine`` within ``max_minutes`` (see the module doc).

    ``target``: ``"semantic"`` (the masks' classes), or for instance segmentation ``"three_class"``
    (background / interior / border from the objects) or ``"flows"`` (foreground and a flow field
    towards each object's centre); ``None`` picks from how crowded the objects are
    (:func:`~unetkit.training.target_plan.choose_target`).
    """
    machine = machine or Machine.detect()
    fp, report = fingerprint_dataset(train_dir)
    config = base or TrainConfig()
    reasons: list[str] = []
    if target is None:
        target, why_target = choose_target(fp.object_crowding, fp.class_names, fp.membrane_class)
        reasons.append(why_target)
    gpu = machine.device == "cuda"
    dims = fp.dims

    # Patch: as large as the device allows, no larger than the images, several objects wide.
    cap = (512 if gpu else 256) if dims == 2 else (128 if gpu else 64)
    smallest = min(fp.min_shape)
    patch = min(cap, smallest)
    why_patch = f"{cap} px is the {'GPU' if gpu else 'CPU'} cap for {dims}D"
    if patch < cap:
        why_patch = f"the smallest image is {smallest} px"
    depth = 4 if patch >= 128 else max(2, int(math.log2(patch)) - 3)
    if dims == 3:
        depth = min(depth, 3)
    patch = _round_down(patch, 2**depth)
    reasons.append(f"patch {patch} px: {why_patch} (rounded to a multiple of 2**depth = {2**depth})")
    receptive = 2**depth * 9
    reasons.append(
        f"depth {depth}: {patch} px pooled {depth} times leaves {patch // 2**depth} px at the bottom; "
        f"receptive field about {receptive} px"
        + (
            f" vs median object diameter {fp.median_object_diameter:.0f} px"
            if fp.median_object_diameter
            else ""
        )
    )
    width = 32 if gpu else 16
    reasons.append(
        f"base width {width}: "
        + ("a GPU trains a wider net in the same time" if gpu else "a narrow net gets more CPU steps")
    )
    batch = (16 if gpu else 4) if dims == 2 else 2
    reasons.append(
        f"batch {batch} with batch norm: enough patches per step for stable statistics on "
        f"{'a GPU' if gpu else 'a CPU'}"
    )

    three_class = target == "three_class"
    maps = map_channels(target, dims)
    binary = len(fp.class_names) == 2 and target == "semantic"
    model = dataclasses.replace(
        config.model,
        architecture="unet",
        in_channels=fp.channels,
        num_classes=1 if binary else 3 if three_class else 1 + maps if maps else len(fp.class_names),
        dims=dims,
        depth=depth,
        base_channels=width,
        padding="same",
        up_mode="transpose",
        norm="batch",
        dropout=0.0,
    )
    reasons.append(
        "same padding: outputs as large as the inputs, any image size tiles with overlap; "
        + (
            "one sigmoid output for the two classes"
            if binary
            else "softmax over background / interior / border (the 3-class target)"
            if three_class
            else f"a foreground logit and {dims} flow components (the flows target)"
            if target == "flows"
            else "a foreground logit and the distance to the outline (the distance target)"
            if maps
            else f"softmax over {len(fp.class_names)} classes"
        )
    )

    # Normalisation: photographs (8-bit colour using the whole range) keep their colours; everything
    # else (microscopy, dim fluorescence, 16-bit, mixed modalities) is stretched per image.
    if fp.channels == 3 and fp.dtype == "uint8" and fp.full_range_fraction >= 0.8:
        normalize = NormalizeConfig(mode="fixed", min_value=0.0, max_value=255.0)
        reasons.append(
            f"normalise fixed 0-255: 8-bit colour photographs ({fp.full_range_fraction:.0%} span the full "
            "range), so colours keep their meaning"
        )
    else:
        normalize = NormalizeConfig(mode="percentile", low=1.0, high=99.8)
        reasons.append(
            f"normalise by the 1st-99.8th percentiles of each image: {fp.dtype} "
            f"{'grey-level' if fp.channels == 1 else f'{fp.channels}-channel'} images whose range varies"
        )

    rarest = min(fp.class_fractions) if fp.class_fractions else 0.0
    if three_class:
        loss = LossConfig(name="ce_dice")
        reasons.append("loss Dice + cross-entropy: the border class is a thin line, few of the pixels")
    elif maps:
        loss = LossConfig(name="ce_dice")
        reasons.append(
            "loss Dice + binary cross-entropy on the foreground, plus the mean squared error of the "
            f"{target} maps (scaled x5, as Cellpose's flows)"
        )
    elif rarest < 0.1:
        loss = LossConfig(name="ce_dice")
        reasons.append(
            f"loss Dice + cross-entropy: the rarest class is {rarest:.1%} of the pixels (imbalanced)"
        )
    else:
        loss = LossConfig(name="ce")
        reasons.append(
            f"loss cross-entropy: the rarest class is {rarest:.1%} of the pixels (balanced enough)"
        )

    object_diameter, why_scale = _object_scale(fp)
    reasons.append(why_scale)
    membrane_class = fp.membrane_class if target == "semantic" else None
    if membrane_class is not None:
        reasons.append(
            f"objects by the membrane route: class {fp.class_names[membrane_class]!r} is a thin network "
            "joined across the images around the other class's objects (as in EM), so cells come from a "
            "seeded watershed on its probability, closed by one-pixel lines (`predict --instances`)"
        )
    data = dataclasses.replace(
        config.data,
        train=str(train_dir),
        val=str(val_dir) if val_dir else config.data.val,
        patch_size=patch,
        batch_size=batch,
        normalize=normalize,
        foreground_oversample=0.33 if rarest < 0.1 else 0.0,
        target=target,
        object_diameter=object_diameter,
        membrane_class=membrane_class,
    )
    train_pixels = int(np.prod(fp.median_shape)) * fp.n_images
    per_epoch = max(batch * 8, round(train_pixels / patch**dims / batch) * batch)
    data = dataclasses.replace(data, patches_per_epoch=per_epoch)
    reasons.append(f"{per_epoch} patches per epoch: about the training pixels once (at least 8 steps)")
    config = dataclasses.replace(config, data=data, model=model, loss=loss)

    val_pixels = None
    if measure:
        val_pixels = (
            _validation_pixels(val_dir, report.classes, object_diameter)
            if val_dir
            else config.data.val_fraction * train_pixels
            * float(np.mean([_passes(d, object_diameter, dims) for d in fp.image_object_diameters] or [1.0]))
        )
    config, seconds = fit_epochs(config, reasons, machine, max_minutes, val_pixels)
    config = adam_cosine(config, reasons, "dice" if binary else "mean_iou")
    return Plan(config=config, fingerprint=fp, machine=machine, reasons=reasons, seconds_per_step=seconds)
