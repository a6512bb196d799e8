"""The plan for a restoration run: the same machine timing and budget rules as segmentation
(:mod:`.planner`), with the choices of the restoration literature.

- residual learning (the network outputs its input plus a correction, DnCNN / VDSR), over the
  noisy input or over the bicubic upscale for super-resolution: the correction is small and
  centred on zero, which a short CPU budget learns faster than the whole image;
- L2 loss for denoising (the Gaussian-noise optimum, and what PSNR measures), L1 for
  super-resolution and paired restoration (sharper edges, EDSR), L2 on the blind spots for
  Noise2Void and between the sub-images for Neighbor2Neighbor (their papers' losses);
- 8-bit images normalised by the fixed 0-255 range (noise levels and PSNR are defined on it),
  other images by their percentiles; the output is mapped back to the input's scale;
- patches of 64 px for Noise2Void (its default), 128 px for Neighbor2Neighbor (whose network sees
  half of each axis: the sub-images are 64 px) and 96 px otherwise on a CPU (128 on a GPU);
- 2 % blind spots for Noise2Void (the paper masks 0.2 %): more pixels carry the loss in each step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from ..config import RestorationConfig, TrainConfig
from ..data.degrade import parse_noise
from ..data.io import read_image
from ..data.neighbours import neighbour_pair_indices
from ..data.normalize import NormalizeConfig
from ..data.pairs import check_image_pairs, find_image_pairs, has_pairs
from ..data.restoration_patches import SELF_SUPERVISED_MODES
from ..losses import LossConfig
from ..tasks.restoration import neighbor2neighbor_loss
from .planner import Machine, Plan, adam_cosine, fingerprint_subset, fit_epochs

#: Blind-spot fraction the plan gives Noise2Void runs (see the reason it prints).
NOISE2VOID_FRACTION = 0.02


@dataclass
class ImagesFingerprint:
    """What the restoration planner knows about a folder of images (or of pairs)."""

    root: str
    n_images: int
    dims: int
    channels: int
    dtype: str
    median_shape: tuple[int, ...]
    min_shape: tuple[int, ...]
    paired: bool
    scale: int

    def describe(self) -> str:
        kind = f"input/target pairs (targets x{self.scale})" if self.paired else "images"
        return (
            f"{self.n_images} {self.dims}D {kind}, {self.channels} channel(s) {self.dtype}, median size "
            f"{'x'.join(map(str, self.median_shape))} (smallest {'x'.join(map(str, self.min_shape))})"
        )


def fingerprint_images(root: Union[str, Path], scale: Optional[int] = None) -> ImagesFingerprint:
    """Fingerprint a restoration dataset folder (raises :class:`~unetkit.data.io.DataError` on problems)."""
    pairs = find_image_pairs(root)
    scale = check_image_pairs(pairs, scale)
    picked = fingerprint_subset(pairs)
    images = [read_image(p.target or p.image) for p in picked]
    shapes = np.array([im.shape[1:] for im in images])
    return ImagesFingerprint(
        root=str(root),
        n_images=len(pairs),
        dims=shapes.shape[1],
        channels=int(images[0].shape[0]),
        dtype=str(read_image(picked[0].image).dtype),
        median_shape=tuple(int(v) for v in np.median(shapes, axis=0)),
        min_shape=tuple(int(v) for v in shapes.min(axis=0)),
        paired=has_pairs(root),
        scale=scale,
    )


def plan_restoration(
    train_dir: Union[str, Path],
    restoration: RestorationConfig,
    *,
    val_dir: Optional[Union[str, Path]] = None,
    max_minutes: Optional[float] = None,
    machine: Optional[Machine] = None,
    base: Optional[TrainConfig] = None,
    measure: bool = True,
) -> Plan:
    """Propose a restoration config for ``train_dir`` (see the module doc for the choices)."""
    machine = machine or Machine.detect()
    mode = restoration.mode
    if mode == "denoise":
        parse_noise(restoration.noise)
    fp = fingerprint_images(train_dir, restoration.scale if mode == "super_resolve" else None)
    config = base or TrainConfig()
    gpu = machine.device == "cuda"
    reasons: list[str] = []
    cap = {"noise2void": 64, "neighbor2neighbor": 128}.get(mode, 128 if gpu else 96)
    if fp.dims == 3:
        cap = {"noise2void": 32, "neighbor2neighbor": 64}.get(mode, 48)
    seen = cap // 2 if mode == "neighbor2neighbor" else cap  # what the network is trained on
    depth = 4 if seen >= 64 else 3
    step = 2**depth * (2 if mode == "neighbor2neighbor" else 1)
    patch = min(cap, min(fp.min_shape) // step * step)
    if mode == "super_resolve":
        multiple = int(np.lcm(step, restoration.scale))
        patch = max(multiple, patch // multiple * multiple)
    reasons.append(
        f"patch {patch} px, depth {depth}: "
        + {"noise2void": "Noise2Void's default patch",
           "neighbor2neighbor": f"the network sees {patch // 2} px sub-images"}.get(
            mode, f"the {'GPU' if gpu else 'CPU'} choice")
        + f", no larger than the smallest image ({min(fp.min_shape)} px), a multiple of {step}"
    )
    width = 32 if gpu else 16
    batch = (16 if gpu else 8) if fp.dims == 2 else 2
    reasons.append(f"base width {width}, batch {batch}: " + (
        "a GPU trains a wider net in the same time" if gpu else "a narrow net gets more CPU steps"))
    model = dataclasses.replace(
        config.model, architecture="unet", in_channels=fp.channels, num_classes=fp.channels, dims=fp.dims,
        depth=depth, base_channels=width, padding="same", up_mode="transpose", norm="batch", dropout=0.0,
        residual=True,
    )
    over = "the bicubic upscale" if mode == "super_resolve" or fp.scale > 1 else "the input"
    reasons.append(f"residual learning over {over}: the network predicts a small correction, learnt faster")
    if fp.dtype == "uint8":
        normalize = NormalizeConfig(mode="fixed", min_value=0.0, max_value=255.0)
        reasons.append("normalise fixed 0-255: 8-bit images; noise levels and PSNR are defined on that scale")
    else:
        normalize = NormalizeConfig(mode="percentile", low=1.0, high=99.8)
        reasons.append(
            f"normalise by each input's 1st-99.8th percentiles ({fp.dtype} images); outputs mapped back"
        )
    loss = LossConfig(name="l1" if mode in ("pairs", "super_resolve") else "l2")
    reasons.append(
        "loss L2: optimal for Gaussian noise and what PSNR measures" if mode == "denoise"
        else "loss L2 on the blind-spot pixels only (Noise2Void)" if mode == "noise2void"
        else "loss L2 between the two sub-images, plus the paper's regulariser (Neighbor2Neighbor)"
        if mode == "neighbor2neighbor"
        else "loss L1: sharper edges than L2 for super-resolution and paired restoration (EDSR)"
    )
    train_pixels = int(np.prod(fp.median_shape)) * fp.n_images
    per_epoch = max(batch * 8, round(train_pixels / patch**fp.dims / batch) * batch)
    reasons.append(f"{per_epoch} patches per epoch: about the training pixels once (at least 8 steps)")
    data = dataclasses.replace(
        config.data, train=str(train_dir), val=str(val_dir) if val_dir else config.data.val,
        patch_size=patch, batch_size=batch, patches_per_epoch=per_epoch, normalize=normalize,
        foreground_oversample=0.0, target="semantic", weight_map=False, object_diameter=None,
    )
    restoration = dataclasses.replace(restoration, scale=fp.scale if mode == "pairs" else restoration.scale)
    if mode == "noise2void":
        restoration = dataclasses.replace(restoration, blind_spot_fraction=NOISE2VOID_FRACTION)
        reasons.append(
            f"{NOISE2VOID_FRACTION:.0%} of the pixels are blind spots (the paper: 0.2 %): ten times the "
            "pixels that carry a loss per step; in 20 CPU minutes on BSD400 it reached a lower blind-spot "
            "validation loss (BENCHMARKS.md)"
        )
        reasons.append(
            "method Noise2Void (--self-supervised alone); --self-supervised neighbor2neighbor came about "
            "1.2 dB closer to a model trained on clean images in the same 20 CPU minutes (BENCHMARKS.md)"
        )
    config = dataclasses.replace(
        config, task="restoration", restoration=restoration, model=model, data=data, loss=loss,
    )
    val_pixels = None
    if measure:
        val_pixels = (
            sum(float(np.prod(read_image(p.target or p.image).shape[1:])) for p in find_image_pairs(val_dir))
            if val_dir else config.data.val_fraction * train_pixels
        )
    loss_of = neighbour_loss_of if mode == "neighbor2neighbor" else None
    config, seconds = fit_epochs(config, reasons, machine, max_minutes, val_pixels, loss_of=loss_of)
    clean = mode not in SELF_SUPERVISED_MODES or (val_dir is not None and has_pairs(val_dir))
    config = adam_cosine(config, reasons, "psnr" if clean else "val_loss")
    return Plan(config=config, fingerprint=fp, machine=machine, reasons=reasons, seconds_per_step=seconds)


def neighbour_loss_of(model: nn.Module, patches: torch.Tensor) -> torch.Tensor:
    """Neighbor2Neighbor's loss on random patches ``(N, C, *P)``, to time its step (a pass over the whole
    patch without gradient, and a training pass over a sub-image)."""
    rng = np.random.default_rng(0)
    pairs = [neighbour_pair_indices(patches.shape[2:], rng) for _ in range(patches.shape[0])]
    a, b = (torch.from_numpy(np.stack(p)).to(patches.device) for p in zip(*pairs))
    return neighbor2neighbor_loss(l1=False)(model, {"image": patches, "sub_a": a, "sub_b": b})
