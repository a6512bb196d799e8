"""Restoration: images in, images out (denoising, super-resolution, paired restoration, and
self-supervised denoising by Noise2Void or Neighbor2Neighbor).

A training pair is an input patch and its target (:mod:`unetkit.data.restoration_patches`: from
``inputs/`` + ``targets/``, or clean images degraded on the fly, or noisy images with blind spots,
or two neighbour sub-images of one noisy image); the loss is L1 or L2 (on the blind spots only for
Noise2Void; between the sub-images, with the paper's regulariser, for Neighbor2Neighbor); validation
scores PSNR and SSIM (scikit-image's, with the data range explicit), super-resolution on the luminance
with ``scale`` pixels of border cropped, as the literature does; the output is an image on the input's
intensity scale (:mod:`unetkit.inference.restore`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data.blindspot import apply_blind_spot, blind_spot_mask
from ..data.degrade import downscale, image_rng, modcrop, parse_noise, rgb_to_ycbcr, upscale
from ..data.io import DataError, failure_message
from ..data.neighbours import neighbour_pair_indices, take_subimage
from ..data.pairs import (
    ImagePair,
    check_image_pairs,
    find_image_pairs,
    has_pairs,
    intensity_max,
    read_checked_image,
)
from ..data.restoration_patches import SELF_SUPERVISED_MODES, RestorationPatchDataset
from ..data.samples import split_samples
from ..restoration_metrics import psnr, restoration_scores
from .base import LossFn, Task, TaskData, check_dims, output_loss, patches_per_epoch

#: Metrics a restoration run validates with (``val_loss`` only when there are no clean targets).
RESTORATION_METRICS = ("psnr", "ssim", "psnr_input", "val_loss")
#: Seed of the validation degradations (the same noise on every validation, every run).
VALIDATION_SEED = 12345
#: Weight of Neighbor2Neighbor's regulariser at the end of the run; it rises linearly from 0 (the paper's
#: schedule: the consistency term counts once the network's own output is worth matching).
NEIGHBOR2NEIGHBOR_GAMMA = 2.0
#: The self-supervised modes by their papers' names.
SELF_SUPERVISED_NAMES = {"noise2void": "Noise2Void", "neighbor2neighbor": "Neighbor2Neighbor"}


@dataclass
class Restored:
    """One validated image: ``input`` as given to the network ``(C, *s)``, ``output`` and ``target``
    ``(C, *S)`` on the intensity scale (``target`` is the noisy image itself without clean targets)."""

    name: str
    input: np.ndarray
    output: np.ndarray
    target: np.ndarray
    metrics: dict[str, float]
    data_range: float


def _pairs_or_images(root: str, mode: str) -> list[ImagePair]:
    pairs = find_image_pairs(root)
    paired = has_pairs(root)
    if mode == "pairs" and not paired:
        raise DataError(
            f"{root}: paired restoration needs {root}/inputs/ and {root}/targets/ with matching names; "
            "for clean images only use --task denoise or --task super-resolve"
        )
    if mode in ("denoise", "super_resolve") and paired:
        raise DataError(
            f"{root} holds inputs/ and targets/ pairs: train on them with --task restore, or give a folder "
            "of clean images to degrade"
        )
    if mode in SELF_SUPERVISED_MODES and paired:
        raise DataError(
            f"{root} holds clean targets/ that a self-supervised ({SELF_SUPERVISED_NAMES[mode]}) run would "
            "ignore: train on the pairs with --task restore, or give only the noisy images (a folder "
            "without targets/)"
        )
    return pairs


class RestorationTask(Task):
    """Images to images (see the module doc)."""

    name = "restoration"
    curve_metrics = ("psnr", "ssim", "val_loss")

    def prepare_data(self, config: TrainConfig) -> TaskData:
        r = config.restoration
        if not config.data.train:
            raise ValueError("no training data: give the image folder (unetkit train DATA) or set data.train")
        if r.mode == "denoise":
            parse_noise(r.noise)
        if r.mode == "super_resolve" and r.scale < 2:
            raise ValueError("super-resolution needs --scale 2, 3 or 4 (restoration.scale >= 2)")
        train = _pairs_or_images(config.data.train, r.mode)
        scale = check_image_pairs(train, r.scale if r.mode != "pairs" or r.scale > 1 else None)
        if config.data.val:
            val = find_image_pairs(config.data.val)
            check_image_pairs(
                val, scale if any(p.target is not None for p in val) else None, same_channels=False
            )
        elif config.data.val_fraction > 0:
            train, val = split_samples(train, config.data.val_fraction, config.seed)
        else:
            val = []
        first = read_checked_image(train[0].image)
        notes = []
        if r.mode in SELF_SUPERVISED_MODES and val and all(p.target is None for p in val):
            by = "the blind-spot loss" if r.mode == "noise2void" else "the loss between neighbour sub-images"
            notes.append(
                f"{SELF_SUPERVISED_NAMES[r.mode]} without clean validation targets: validating by {by}"
            )
        return TaskData(
            train, val, int(first.shape[0]), first.ndim - 1, scale=scale, notes=notes, settings=r.mode
        )

    def resolve_config(self, config: TrainConfig, data: TaskData) -> TrainConfig:
        """As many outputs as inputs; the scale of the pairs; a restoration metric to monitor."""
        check_dims(config, data)
        if data.scale > 1 and data.dims != 2:
            raise ValueError("super-resolution takes 2D images")
        model = dataclasses.replace(config.model, in_channels=data.in_channels, num_classes=data.in_channels)
        budget = config.budget
        if budget.monitor not in RESTORATION_METRICS:
            self_supervised = config.restoration.mode in SELF_SUPERVISED_MODES
            clean = any(p.target is not None for p in data.val) or not self_supervised
            budget = dataclasses.replace(budget, monitor="psnr" if clean else "val_loss")
        restoration = dataclasses.replace(config.restoration, scale=data.scale)
        return dataclasses.replace(config, model=model, budget=budget, restoration=restoration)

    def build_loss(self, config: TrainConfig, data: TaskData) -> LossFn:
        l1 = config.loss.name == "l1"
        if config.restoration.mode == "neighbor2neighbor":
            return neighbor2neighbor_loss(l1)

        def restoration_loss(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            diff = output.float() - batch["target"]
            error = diff.abs() if l1 else diff.square()
            mask = batch.get("mask")
            if mask is None:
                return error.mean()
            mask = mask.unsqueeze(1)
            return (error * mask).sum() / (mask.sum() * error.shape[1]).clamp_min(1.0)

        return output_loss(restoration_loss)

    def build_dataset(self, config: TrainConfig, data: TaskData, model: nn.Module) -> RestorationPatchDataset:
        r = config.restoration
        patch = config.data.patch_size
        model.check_input_size((patch,) * data.dims)
        if model.context() > 0:
            raise ValueError("restoration trains same-padding networks (--model.padding same)")
        pixels = sum(int(np.prod(read_checked_image(p.target or p.image).shape[1:])) for p in data.train)
        return RestorationPatchDataset(
            data.train,
            mode=r.mode,
            patch_size=patch,
            normalize=config.data.normalize,
            noise=parse_noise(r.noise) if r.mode == "denoise" else None,
            scale=data.scale,
            blind_spot=(r.blind_spot_fraction, r.blind_spot_radius, r.blind_spot_mode),
            seed=config.seed,
            patches_per_epoch=patches_per_epoch(config, pixels, (patch,) * data.dims),
        )

    def validation_items(self, config: TrainConfig, data: TaskData) -> list[Any]:
        return [validation_item(p, config, data.scale) for p in data.val]

    def predictor(self, model: nn.Module, config: TrainConfig, data: TaskData, device: torch.device) -> Any:
        from ..inference import Predictor
        from ..precision import prediction_precision

        return Predictor(
            model, device=device, normalize=config.data.normalize, task="restoration", scale=data.scale,
            precision=prediction_precision(config.precision),
        )

    def validate(self, predictor: Any, items: Sequence[Any], data: TaskData) -> tuple[dict[str, float], list]:
        scored = score_restorations(predictor, items, data.settings or "denoise")
        return summary_of(scored), scored

    def save_samples(self, folder: Path, scored: Sequence[Restored], data: TaskData, limit: int) -> None:
        from ..training.reporting import crop_panels, save_picture

        for s in scored[:limit]:
            save_picture(folder / f"{s.name}.png", crop_panels([s.input, s.output, s.target], s.data_range))

    def describe(self, config: TrainConfig) -> str:
        r = config.restoration
        return {
            "pairs": "restoration of paired images",
            "denoise": f"denoising ({r.noise})",
            "super_resolve": f"super-resolution x{r.scale}",
            "noise2void": "self-supervised denoising (Noise2Void)",
            "neighbor2neighbor": "self-supervised denoising (Neighbor2Neighbor)",
        }[r.mode]


def validation_item(pair: ImagePair, config: TrainConfig, scale: int) -> tuple:
    """``(name, input (C, *s), target (C, *S) or None, data range)`` of one validation image: a pair as
    it is, or a clean image degraded as in training (the noise seeded per image name)."""
    r = config.restoration
    image = read_checked_image(pair.image).astype(np.float32)
    data_range = r.data_range
    if pair.target is not None:
        target = read_checked_image(pair.target)
        data_range = data_range or intensity_max(target)
        return pair.name, image, target.astype(np.float32), data_range
    data_range = data_range or intensity_max(read_checked_image(pair.image))
    if r.mode == "denoise":
        noisy = parse_noise(r.noise).apply(image, image_rng(pair.name, VALIDATION_SEED), data_max=data_range)
        return pair.name, noisy, image, data_range
    if r.mode == "super_resolve":
        target = modcrop(image, scale)
        return pair.name, downscale(target, scale), target, data_range
    return pair.name, image, None, data_range


def _baseline(image: np.ndarray, scale: int) -> np.ndarray:
    """What the input alone gives: itself, or its bicubic upscale for super-resolution."""
    return upscale(image, scale) if scale > 1 else image


def score_restorations(predictor: Any, items: Iterable[tuple], mode: str = "denoise") -> list[Restored]:
    """Restore each validation item and score it (see :func:`validation_item` for the items).

    With a target: ``psnr`` / ``ssim`` of the output and ``psnr_input`` of the input (bicubic-upscaled
    for super-resolution), on the luminance with ``scale`` pixels of border for super-resolution of
    colour images. Without (noisy images only): ``val_loss``, the loss the run's ``mode`` trains with,
    against the noisy values and in units of the data range: the mean squared error of the output at
    blind spots placed as in training (Noise2Void), or Neighbor2Neighbor's loss on sub-images drawn as
    in training, the regulariser at its final weight (the objective the run ends on; the error between
    the sub-images alone kept falling for the first third of a 20-minute run only, and chose a model
    0.15 dB worse on Set12 than the last, BENCHMARKS.md).
    """
    scale = predictor.scale
    scored = []
    for name, image, target, data_range in items:
        if target is None:
            loss, output = self_supervised_loss(predictor, name, image, data_range, mode)
            scored.append(Restored(name, image, output, image, {"val_loss": loss}, data_range))
            continue
        output = predictor.restore(image)
        y = scale > 1 and target.shape[0] == 3
        border = scale if scale > 1 else 0
        metrics = restoration_scores(output, target, data_range=data_range, border=border, y_channel=y)
        base = _baseline(image, scale)
        if y:
            base_y, target_y = rgb_to_ycbcr(base)[:1], rgb_to_ycbcr(target)[:1]
            metrics["psnr_input"] = psnr(_crop(base_y, border), _crop(target_y, border), data_range)
        elif base.shape == target.shape:
            metrics["psnr_input"] = psnr(_crop(base, border), _crop(target, border), data_range)
        scored.append(Restored(name, image, output, target, metrics, data_range))
    return scored


def self_supervised_loss(
    predictor: Any, name: str, image: np.ndarray, data_range: float, mode: str
) -> tuple[float, np.ndarray]:
    """``(val_loss, output)`` of a noisy image ``(C, *S)`` without a clean target (see
    :func:`score_restorations`); ``output`` is the restored image, for the pictures."""
    rng = image_rng(name, VALIDATION_SEED)
    if mode == "neighbor2neighbor":
        a, b = neighbour_pair_indices(image.shape[1:], rng)
        flat = image.reshape(image.shape[0], -1)
        output = predictor.restore(image)
        whole = output.reshape(flat.shape)
        diff = (predictor.restore(flat[:, a]) - flat[:, b]) / data_range
        gap = (whole[:, a] - whole[:, b]) / data_range
        loss = np.mean(diff**2) + NEIGHBOR2NEIGHBOR_GAMMA * np.mean((diff - gap) ** 2)
        return float(loss), output
    mask = blind_spot_mask(image.shape[1:], 0.01, rng)
    output = predictor.restore(apply_blind_spot(image, mask, rng))
    return float(np.mean(((output - image)[:, mask] / data_range) ** 2)), output


def neighbor2neighbor_loss(l1: bool) -> LossFn:
    """Neighbor2Neighbor's loss on a batch ``{"image": (N, C, *P), "sub_a", "sub_b": (N, *P // 2)}``.

    The network restores the first sub-image, scored against the second (L2, or L1 with ``l1``), plus the
    regulariser: the same difference again, minus the difference of the network's own output of the whole
    patch sub-sampled the same two ways (computed without gradient), weighted by
    :data:`NEIGHBOR2NEIGHBOR_GAMMA` times the run's progress.
    """

    def error(diff: torch.Tensor) -> torch.Tensor:
        return diff.abs().mean() if l1 else diff.square().mean()

    def run(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        noisy, a, b = batch["image"], batch["sub_a"], batch["sub_b"]
        with torch.no_grad():
            whole = model(noisy).float()
        first = take_subimage(noisy, a)
        if first.dim() == 4:
            first = first.contiguous(memory_format=torch.channels_last)
        diff = model(first).float() - take_subimage(noisy, b).float()
        gap = take_subimage(whole, a) - take_subimage(whole, b)
        gamma = NEIGHBOR2NEIGHBOR_GAMMA * batch.get("progress", torch.ones(()))
        return error(diff) + gamma * error(diff - gap)

    return run


def _crop(image: np.ndarray, border: int) -> np.ndarray:
    return image[..., border:image.shape[-2] - border, border:image.shape[-1] - border] if border else image


def summary_of(scored: Sequence[Restored]) -> dict[str, float]:
    """Mean of each metric over the images."""
    keys = {k for s in scored for k in s.metrics}
    return {k: float(np.mean([s.metrics[k] for s in scored if k in s.metrics])) for k in sorted(keys)}


def restoration_noise(config: TrainConfig, noise: Optional[str]) -> TrainConfig:
    """``config`` with its validation/evaluation noise replaced by ``noise`` (``None``: unchanged)."""
    if noise is None:
        return config
    parse_noise(noise)
    return dataclasses.replace(config, restoration=dataclasses.replace(config.restoration, noise=noise))


def evaluate_restoration(
    run: Any,
    data_dir: Union[str, Path],
    out_dir: Union[str, Path],
    *,
    predictor: Any,
    noise: Optional[str] = None,
    save_outputs: bool = True,
    worst: int = 4,
    progress: bool = False,
) -> dict[str, Any]:
    """Score a restoration run on ``data_dir`` (pairs as they are; clean images degraded as the run
    was trained, with ``noise`` replacing its noise) and write ``per_image.csv``, ``summary.json``,
    ``report.md`` (input | output | target crops of the ``worst`` images by PSNR) and, with
    ``save_outputs``, ``restored/<name>.tif`` (float32)."""
    from ..inference.restore import save_restored
    from ..training.reporting import crop_panels, failed_section, markdown_table, save_picture, write_csv
    from ..utils.atomic import atomic_write_json, atomic_write_text

    config = restoration_noise(run.config, noise)
    pairs = find_image_pairs(data_dir)
    scale = predictor.scale
    paired_scale = scale if any(p.target is not None for p in pairs) else None
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="evaluating", unit="image")
    scored, failed = [], []
    for pair in pairs:
        try:
            check_image_pairs([pair], paired_scale, same_channels=False)
            item = validation_item(pair, config, scale)
            scored += score_restorations(predictor, [item], config.restoration.mode)
        except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the evaluation
            failed.append(failure_message(pair.image, exc))
    if not scored:
        raise DataError(f"{data_dir}: no image could be scored:\n  - " + "\n  - ".join(failed))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"image": s.name, **s.metrics} for s in scored]
    summary: dict[str, Any] = {
        **summary_of(scored), "num_images": len(scored), "run": str(run.path), "data": str(data_dir),
        "task": describe_mode(config), "tta": bool(predictor.tta), **({"failed": failed} if failed else {}),
    }
    write_csv(out_dir / "per_image.csv", rows)
    atomic_write_json(out_dir / "summary.json", summary)
    if save_outputs:
        for s in scored:
            save_restored(out_dir / "restored" / f"{s.name}.tif", s.output.astype(np.float32))
    columns = [c for c in ("psnr", "ssim", "psnr_input", "val_loss") if c in summary]
    how = (
        "PSNR/SSIM on the luminance (Y, BT.601) with a border of the scale cropped for colour images"
        if scale > 1 else "PSNR/SSIM on every channel"
    )
    lines = [
        f"# Evaluation of {run.path} on {data_dir}", "",
        f"{len(scored)} images; {describe_mode(config)}; {how}; `psnr_input` scores the input alone "
        f"({'its bicubic upscale' if scale > 1 else 'the degraded image'}).", "",
        "## Mean over images", "", markdown_table([summary], columns), "",
    ]
    ranked = sorted(scored, key=lambda s: s.metrics.get("psnr", -s.metrics.get("val_loss", 0.0)))
    lines += [
        f"## Worst {min(worst, len(scored))} images by PSNR", "", "Each picture: input | output | target.", ""
    ]
    for s in ranked[:worst]:
        picture = save_picture(
            out_dir / "crops" / f"{s.name}.png", crop_panels([s.input, s.output, s.target], s.data_range)
        )
        lines += [f"### {s.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in s.metrics.items()), "",
                  f"![{s.name}](crops/{picture.name})", ""]
    lines += ["## Every image", "", markdown_table(rows, ["image", *columns]), "", *failed_section(failed)]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    return summary


def describe_mode(config: TrainConfig) -> str:
    """The restoration a config trains, in words (e.g. ``denoising (gaussian:25)``)."""
    return RestorationTask().describe(config)
