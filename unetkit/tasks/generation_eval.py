"""``unetkit evaluate`` for a generation run: scores that need no Inception weights and no internet.

* whole-image generation (classes or none): a small classifier trained on the run's own real
  training images (:mod:`unetkit.generation_metrics`) gives the accuracy of class-conditional
  samples, the Frechet distance between samples and held-out real images in its feature space,
  calibrated by the same distance between two disjoint real splits of the sample count (the floor),
  and each sample's distance to its nearest training image (does it copy the training set?);
* super-resolution stages: PSNR of the sample against the high-resolution image (luminance, a
  border of ``scale`` cropped, as the literature), the bicubic baseline's, and the consistency of
  the sample with its condition (PSNR of the downscaled sample against the low-resolution input);
* mask-to-image: with a segmentation run (``segmenter``), the Dice between each conditioning mask
  and that run's prediction on the generated image, next to the same on the real image.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from ..data.degrade import downscale, modcrop, rgb_to_ycbcr, upscale, ycbcr_to_rgb
from ..data.generation import (
    GenerationItem,
    LoadedImage,
    centre_crop,
    find_generation_images,
    from_unit_range,
    load_generation_item,
    to_unit_range,
)
from ..data.io import DataError, failure_message
from ..data.pairs import read_checked_image
from ..restoration_metrics import psnr

PathLike = Union[str, Path]


def _same_folder(a: Optional[str], b: PathLike) -> bool:
    return a is not None and Path(a).resolve() == Path(b).resolve()


def _stack(images: list[LoadedImage], size: int) -> torch.Tensor:
    """Centre crops ``(N, C, size, size)`` of the loaded images."""
    return torch.from_numpy(np.stack([centre_crop(im, size).image for im in images]))


def _labels(images: list[LoadedImage]) -> Optional[torch.Tensor]:
    if any(im.label is None for im in images):
        return None
    return torch.tensor([im.label for im in images], dtype=torch.long)


def evaluate_generation(
    run: Any,
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    n: Optional[int] = None,
    steps: int = 50,
    sampler: str = "ddim",
    guidance: float = 3.0,
    eta: float = 0.0,
    seed: int = 0,
    segmenter: Optional[PathLike] = None,
    classifier: Any = None,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``run`` (a generation :class:`~unetkit.training.run.Run`) against the images of ``data_dir``
    and write ``summary.json``, ``report.md`` and the samples (see the module doc). ``classifier``: a
    trained :class:`~unetkit.generation_metrics.FeatureClassifier` to score with (default: one is
    trained on the run's training images)."""
    from ..inference.generate import DiffusionSampler

    diffusion = DiffusionSampler.from_config(run.model, run.config, run.classes, device)
    options = dict(steps=steps, sampler=sampler, guidance=guidance, eta=eta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if diffusion.condition == "low_res":
        summary = _evaluate_super_resolution(
            diffusion, data_dir, out, seed=seed, progress=progress, **options
        )
    elif diffusion.condition == "mask":
        summary = _evaluate_mask(
            diffusion, run, data_dir, out, segmenter, seed=seed, progress=progress, **options
        )
    else:
        summary = _evaluate_whole_images(
            diffusion, run, data_dir, out, n=n, seed=seed, classifier=classifier, **options
        )
    summary.update({"run": str(run.path), "data": str(data_dir), **options, "seed": seed})
    from ..utils.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", _report(summary))
    return summary


# ----------------------------------------------------------------------------- whole images
def _evaluate_whole_images(
    diffusion: Any, run: Any, data_dir: PathLike, out: Path, *, n: Optional[int], seed: int, classifier: Any,
    **options: Any,
) -> dict[str, Any]:
    """Samples against held-out real images (the run's validation split when ``data_dir`` is its
    training folder), the classifier trained on the run's training images."""
    from ..generation_metrics import score_generation
    from ..inference.generate import save_grid
    from .generation import GenerationTask

    config = run.config
    data = GenerationTask().prepare_data(config)
    size = diffusion.image_size
    g = config.generation
    failed: list[str] = []
    if _same_folder(config.data.train, data_dir) or _same_folder(config.data.val, data_dir):
        held_out = data.val
    else:
        items, classes = find_generation_images(data_dir)
        if classes and classes != (g.classes or []):
            raise DataError(f"{data_dir} has classes {classes}; the run was trained on {g.classes}")
        held_out = []
        for i in items:
            try:
                held_out.append(load_generation_item(GenerationItem(i.image, i.label), g.intensity))
            except Exception as exc:  # noqa: BLE001 - one broken image must not stop the evaluation
                failed.append(failure_message(i.image, exc))
    if len(held_out) < 2:
        raise DataError(f"{data_dir}: at least 2 held-out images are needed to compare samples with")
    real_train, real_held = _stack(data.train, size), _stack(held_out, size)
    train_labels, held_labels = _labels(data.train), _labels(held_out)
    count = n or len(held_out)
    labels = None
    if held_labels is not None and diffusion.classes:
        # The held-out classes in a seeded order: any count of samples has their class mix.
        order = torch.randperm(len(held_labels), generator=torch.Generator().manual_seed(seed))
        labels = held_labels[order[torch.arange(count) % len(held_labels)]]
    started = time.perf_counter()
    samples = diffusion.sample(count, labels=labels, seed=seed, **options)
    seconds = time.perf_counter() - started
    scores = score_generation(
        samples, labels, real_train, train_labels, real_held, held_labels, classifier=classifier, seed=seed
    ).to_dict()
    save_grid(out / "samples.png", _by_class(samples, labels), 8)
    save_grid(out / "real.png", _by_class(real_held, held_labels), 8)
    return _with_failures({
        "task": "generation", "condition": diffusion.condition, **scores,
        "n_held_out": len(held_out), "n_train": len(data.train),
        "sampling_seconds": seconds, "seconds_per_sample": seconds / count,
    }, failed)


def _by_class(images: torch.Tensor, labels: Optional[torch.Tensor], per_class: int = 8) -> list[np.ndarray]:
    """Up to ``per_class`` images of each class, class after class (the first 64 without classes)."""
    if labels is None:
        return list(images[:64].numpy())
    classes = sorted(set(labels.tolist()))
    picked = [i for c in classes for i in (labels == c).nonzero()[:per_class, 0].tolist()]
    return list(images[picked].numpy())


# ------------------------------------------------------------------------- super-resolution
def _luminance(image: np.ndarray, channels: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A colour image for a grey-scale stage: its Y (and its YCbCr to put the colour back), else itself."""
    if image.shape[0] == 3 and channels == 1:
        ycc = rgb_to_ycbcr(image.astype(np.float64))
        return ycc[:1].astype(np.float32), ycc
    return image.astype(np.float32), None


def _evaluate_super_resolution(
    diffusion: Any, data_dir: PathLike, out: Path, *, seed: int, progress: bool, **options: Any
) -> dict[str, Any]:
    """Each pair of ``data_dir`` (``inputs/`` low-resolution, ``targets/`` high-resolution), or each clean
    image bicubic-downscaled by the stage's scale, generated back to full resolution."""
    from ..data.pairs import check_image_pairs, find_image_pairs, has_pairs
    from ..inference.restore import save_restored
    from ..training.reporting import crop_panels, save_picture, write_csv

    scale = diffusion.scale
    pairs = find_image_pairs(data_dir)
    if has_pairs(data_dir):
        check_image_pairs(pairs, scale, same_channels=False)
    rows, failed, seconds = [], [], 0.0
    intensity = diffusion.generation.intensity
    for pair in _progress(pairs, progress):
        try:
            hr = modcrop(read_checked_image(pair.target or pair.image), scale).astype(np.float32)
            hr_y, ycc = _luminance(hr, diffusion.channels)
            if hr_y.shape[0] != diffusion.channels:
                raise DataError(
                    f"{pair.image}: {hr.shape[0]} channels; the run generates {diffusion.channels}"
                )
            low = (_luminance(read_checked_image(pair.image).astype(np.float32), diffusion.channels)[0]
                   if pair.target is not None else downscale(hr_y, scale))
        except Exception as exc:  # noqa: BLE001 - one broken pair must not stop the evaluation
            failed.append(failure_message(pair.target or pair.image, exc))
            continue
        condition = torch.from_numpy(upscale(to_unit_range(low, intensity), scale))[None]
        started = time.perf_counter()
        result = diffusion.sample(1, condition=condition, seed=seed, **options)[0].numpy()
        seconds += time.perf_counter() - started
        data_range = intensity[1] - intensity[0]
        sr = (np.clip(result, -1, 1) + 1) / 2 * data_range + intensity[0]
        bicubic = upscale(low, scale)
        crop = (slice(None), slice(scale, -scale), slice(scale, -scale))
        rows.append({
            "image": pair.name,
            "psnr": psnr(sr[crop], hr_y[crop], data_range),
            "psnr_bicubic": psnr(np.clip(bicubic, *intensity)[crop], hr_y[crop], data_range),
            "consistency_psnr": psnr(downscale(sr, scale), low, data_range),
        })
        picture = [bicubic, sr, hr_y]
        if ycc is not None:
            colour = ycbcr_to_rgb(np.concatenate([sr, ycc[1:]]))
            save_restored(out / "samples" / f"{pair.name}.png", from_unit_range(
                to_unit_range(colour, intensity), intensity, np.dtype(np.uint8)))
        else:
            save_restored(out / "samples" / f"{pair.name}.tif", sr.astype(np.float32))
        save_picture(out / "crops" / f"{pair.name}.png", crop_panels(picture, data_range))
    _refuse_if_nothing_scored(data_dir, rows, failed)
    write_csv(out / "per_image.csv", rows)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "psnr_bicubic", "consistency_psnr")}
    return _with_failures({
        "task": "generation", "condition": "low_res", "scale": scale, "num_images": len(rows), **mean,
        "scored_on": "the luminance (Y, BT.601) of colour images, a border of the scale cropped",
        "sampling_seconds": seconds, "seconds_per_image": seconds / max(len(rows), 1), "per_image": rows,
    }, failed)


# ----------------------------------------------------------------------------- mask-to-image
def _evaluate_mask(
    diffusion: Any, run: Any, data_dir: PathLike, out: Path, segmenter: Optional[PathLike], *, seed: int,
    progress: bool, **options: Any,
) -> dict[str, Any]:
    """An image generated for each mask of ``data_dir``; with ``segmenter`` both the generated and the
    real image are segmented and scored by Dice against the mask."""
    from ..data.samples import find_samples, load_labels
    from ..inference import Predictor
    from ..inference.restore import save_restored
    from ..training.reporting import write_csv

    classes = run.classes
    predictor = Predictor.from_run(segmenter) if segmenter else None
    rows, failed, seconds = [], [], 0.0
    for sample in _progress(find_samples(data_dir), progress):
        try:
            labels = load_labels(sample, classes)
            real = read_checked_image(sample.image) if predictor is not None else None
        except Exception as exc:  # noqa: BLE001 - one broken pair must not stop the evaluation
            failed.append(failure_message(sample.mask, exc))
            continue
        started = time.perf_counter()
        condition = diffusion.condition_from_labels(labels)
        generated = diffusion.sample(1, condition=condition, seed=seed, **options)
        seconds += time.perf_counter() - started
        image = diffusion.to_data(generated)[0]
        suffix = ".png" if image.dtype == np.uint8 else ".tif"
        save_restored(out / "samples" / f"{sample.name}{suffix}", image)
        row: dict[str, Any] = {"image": sample.name}
        if predictor is not None:
            row["dice_generated"] = _dice(predictor.predict(image), labels)
            row["dice_real"] = _dice(predictor.predict(real), labels)
        rows.append(row)
    _refuse_if_nothing_scored(data_dir, rows, failed)
    write_csv(out / "per_image.csv", rows)
    summary: dict[str, Any] = {
        "task": "generation", "condition": "mask", "num_images": len(rows), "segmenter": str(segmenter),
        "sampling_seconds": seconds, "seconds_per_image": seconds / max(len(rows), 1), "per_image": rows,
    }
    if predictor is not None:
        summary["dice_generated"] = float(np.mean([r["dice_generated"] for r in rows]))
        summary["dice_real"] = float(np.mean([r["dice_real"] for r in rows]))
    return _with_failures(summary, failed)


def _refuse_if_nothing_scored(data_dir: PathLike, rows: list, failed: list[str]) -> None:
    if not rows:
        reasons = "\n  - ".join(failed or ["(none found)"])
        raise DataError(f"{data_dir}: no image could be scored:\n  - {reasons}")


def _with_failures(summary: dict[str, Any], failed: list[str]) -> dict[str, Any]:
    """``summary`` with the files that could not be scored under ``failed`` (the command exits 1)."""
    return {**summary, "failed": failed} if failed else summary


def _dice(prediction: np.ndarray, labels: np.ndarray) -> float:
    """Dice of the foreground (every class but 0) of predicted class ids against ``labels``."""
    pred = np.asarray(prediction) > 0
    truth = labels > 0
    total = pred.sum() + truth.sum()
    return float(2 * np.logical_and(pred, truth).sum() / total) if total else 1.0


def _progress(items: list, show: bool) -> Any:
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="generating", unit="image")


def _report(summary: dict[str, Any]) -> str:
    from ..training.reporting import markdown_table

    shown = {k: v for k, v in summary.items() if not isinstance(v, (list, dict))}
    lines = [f"# Evaluation of {summary['run']} on {summary['data']}", "",
             markdown_table([shown], list(shown)), ""]
    if "per_image" in summary:
        rows = summary["per_image"]
        lines += ["## Every image", "", markdown_table(rows, list(rows[0]) if rows else []), ""]
    if summary.get("condition") in ("class", "none"):
        lines += ["Samples: ![samples](samples.png)  Real held-out images: ![real](real.png)", ""]
    return "\n".join(lines)


__all__ = ["evaluate_generation"]
