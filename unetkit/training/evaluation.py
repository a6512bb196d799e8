"""Whole-image scoring shared by validation during training and ``unetkit evaluate``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from ..config import monitor_mode
from ..metrics import (
    best_pixel_error,
    best_rand_error,
    pixel_counts_by_threshold,
    rand_errors_by_threshold,
    segmentation_metrics,
    summarize,
)
from ..utils.atomic import atomic_write_json, atomic_write_text
from .reporting import markdown_table, save_overlay, write_csv

#: Columns of the report tables, in this order when present.
REPORT_COLUMNS = (
    "dice", "iou", "precision", "recall", "pixel_error", "isbi_pixel_error", "rand_error", "rand_error_best",
    "hd95", "mean_iou",
    "ap_50", "dsb_score", "f1_50", "aji", "panoptic_quality",
)


@dataclass
class Scored:
    """One scored image: its name, the normalised image ``(C, *S)``, truth and prediction ``(*S)``,
    and for two-class problems its Rand error ``(T,)`` and foreground pixel counts ``(T, 3)`` at
    each ISBI threshold."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    metrics: dict[str, Any]
    rand_sweep: Optional[np.ndarray] = None
    pixel_sweep: Optional[np.ndarray] = None


def predicted_instances(probs: np.ndarray, target: str, config: Any) -> np.ndarray:
    """Objects ``(*S)`` from probabilities ``(K, *S)``: the 3-class route for a ``three_class`` net,
    the foreground watershed (or components, per ``config``) otherwise."""
    from ..instances import instances_from_foreground, instances_from_three_class

    if target == "three_class":
        return instances_from_three_class(probs, config)
    if probs.shape[0] != 2:
        raise ValueError("instance scores need a binary (foreground) or a three_class run")
    return instances_from_foreground(probs[1], config)


def score_images(
    predictor: Any,
    items: Iterable[tuple],
    classes: Any,
    *,
    spacing: Optional[Sequence[float]] = None,
    rand_sweep: bool = True,
    instance_config: Any = None,
) -> list[Scored]:
    """Predict each ``(name, image (C, *S) normalised, truth (*S)[, true instances (*S)])`` with
    ``predictor`` and score it in the dataset's classes (``predictor.labels``; a three-class
    network's objects come from its border route).

    With ``rand_sweep`` two-class problems also get their Rand error and pixel counts at each ISBI
    threshold, from which :func:`summary_of` reports ``rand_error_best`` / ``rand_threshold`` and
    ``isbi_pixel_error`` / ``isbi_pixel_threshold`` (the ISBI 2012 protocol,
    :func:`~unetkit.metrics.best_rand_error`, :func:`~unetkit.metrics.best_pixel_error`; skipped
    in per-epoch validation for speed).
    With ``instance_config`` (an :class:`~unetkit.instances.InstanceConfig`) and true instances in
    the items, the object-level scores of :mod:`unetkit.instance_metrics` are added.
    """
    from ..instance_metrics import instance_scores

    scored = []
    target = predictor.target
    binary = classes.num_classes == 2 and target == "semantic"
    for name, image, truth, *true_instances in items:
        probs = predictor.predict_proba(image)
        pred = predictor.labels(probs)
        metrics = segmentation_metrics(
            pred,
            truth,
            classes.num_classes,
            ignore_index=classes.ignore_index,
            spacing=spacing,
            class_names=classes.names,
        )
        if binary and rand_sweep:
            ignore = classes.ignore_index
            keep = np.ones(truth.shape, bool) if ignore is None else truth != ignore
            sweep = rand_errors_by_threshold(np.where(keep, probs[1], 0.0), np.where(keep, truth, 0))
            pixel_sweep = pixel_counts_by_threshold(probs[1][keep], truth[keep])
        else:
            sweep = pixel_sweep = None
        if instance_config is not None and true_instances:
            found = predicted_instances(probs, target, instance_config)
            metrics.update(instance_scores(true_instances[0], found).to_dict())
        scored.append(Scored(name, image, truth, pred, metrics, sweep, pixel_sweep))
    return scored


def summary_of(scored: Sequence[Scored], classes: Any) -> dict[str, Any]:
    summary = summarize([s.metrics for s in scored], classes.num_classes, classes.names)
    sweeps = [s.rand_sweep for s in scored if s.rand_sweep is not None]
    if sweeps and len(sweeps) == len(scored):
        summary["rand_error_best"], summary["rand_threshold"] = best_rand_error(np.stack(sweeps))
        counts = np.stack([s.pixel_sweep for s in scored])
        summary["isbi_pixel_error"], summary["isbi_pixel_threshold"] = best_pixel_error(counts)
    return summary


def per_image_rows(scored: Sequence[Scored]) -> list[dict[str, Any]]:
    return [{"image": s.name, **{k: v for k, v in s.metrics.items() if k != "confusion"}} for s in scored]


def worst_first(scored: Sequence[Scored], metric: str) -> list[Scored]:
    """Images from the worst to the best by ``metric`` (nan last)."""
    sign = 1.0 if monitor_mode(metric) == "min" else -1.0

    def key(s: Scored) -> float:
        v = float(s.metrics.get(metric, math.nan))
        return math.inf if math.isnan(v) else -sign * v

    return sorted(scored, key=key)


def write_report(
    out_dir: Union[str, Path],
    scored: Sequence[Scored],
    classes: Any,
    *,
    title: str,
    metric: str = "dice",
    worst: int = 4,
    extra: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Write ``per_image.csv``, ``summary.json``, overlays of the ``worst`` images and ``report.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summary_of(scored, classes)
    if extra:
        summary.update(extra)
    write_csv(out_dir / "per_image.csv", per_image_rows(scored))
    atomic_write_json(out_dir / "summary.json", summary)
    columns = [c for c in REPORT_COLUMNS if c in summary]
    lines = [
        f"# {title}",
        "",
        f"{len(scored)} images; classes: {', '.join(classes.names)}.",
        "",
        "## Mean over images",
        "",
        markdown_table([summary], columns),
        "",
    ]
    if classes.num_classes > 2:
        per_class = [
            {
                "class": n,
                "IoU": summary["global_iou_per_class"][n],
                "Dice": summary["global_dice_per_class"][n],
            }
            for n in classes.names
        ]
        lines += [
            "## Per class (summed over the dataset)",
            "",
            markdown_table(per_class, ["class", "IoU", "Dice"]),
            "",
            f"Mean IoU over the dataset: {summary['global_iou']:.4f}",
            "",
        ]
    lines += [
        f"## Worst {min(worst, len(scored))} images by {metric}",
        "",
        "Each overlay shows image | truth | prediction.",
        "",
    ]
    for s in worst_first(scored, metric)[:worst]:
        picture = save_overlay(out_dir / "overlays" / f"{s.name}.png", s.image, s.truth, s.pred, classes)
        value = s.metrics.get(metric, math.nan)
        lines += [f"### {s.name}: {metric} {value:.4f}", "", f"![{s.name}](overlays/{picture.name})", ""]
    lines += [
        "## Every image",
        "",
        markdown_table(per_image_rows(scored), ["image", *columns]),
        "",
        "Warping error: not implemented (see unetkit.metrics).",
        "",
    ]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    return summary


def evaluate_run(
    run_dir: Union[str, Path],
    data_dir: Union[str, Path],
    out_dir: Union[str, Path],
    *,
    tta: bool = False,
    save_masks: bool = True,
    worst: int = 4,
    metric: Optional[str] = None,
    progress: bool = False,
    instance_config: Any = None,
    noise: Optional[str] = None,
    generation: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Score a RUN's best model on a dataset folder and write the report (see :func:`write_report`).

    A generation run draws samples and scores them instead
    (:func:`~unetkit.tasks.generation_eval.evaluate_generation`, with the ``generation`` options:
    ``n``, ``steps``, ``sampler``, ``guidance``, ``seed``, ``segmenter``).

    A restoration run is scored by PSNR/SSIM instead
    (:func:`~unetkit.tasks.restoration.evaluate_restoration`; ``noise`` replaces the noise of a
    denoising run for clean images; ``save_masks`` then saves the restored images).

    With ``save_masks`` the predicted masks go to ``out_dir/masks/`` in the encoding of the
    training masks (0/255, palette, RGB...), one per image, named like the image. With
    ``instance_config`` objects are scored too, against the dataset's ``instances/`` (or the
    connected components of the masks when it has none).
    """
    from ..data.check import check_dataset
    from ..data.samples import find_samples, load_instances, load_sample
    from ..inference import Predictor
    from .run import Run

    run = Run.load(run_dir)
    if run.task == "generation":
        from ..tasks.generation_eval import evaluate_generation

        return evaluate_generation(run, data_dir, out_dir, progress=progress, **(generation or {}))
    if run.task == "restoration":
        from ..tasks.restoration import evaluate_restoration

        predictor = Predictor.from_run(run.path, tta=tta)
        return evaluate_restoration(
            run, data_dir, out_dir, predictor=predictor, noise=noise, save_outputs=save_masks, worst=worst,
            progress=progress,
        )
    check_dataset(data_dir).raise_if_problems()
    samples = find_samples(data_dir)
    cfg = run.config.data
    predictor = Predictor(
        run.model, classes=run.classes, tta=tta, object_diameter=cfg.object_diameter, target=cfg.target
    )
    def item(sample: Any) -> tuple:
        image, truth = load_sample(sample, run.classes, cfg.normalize)
        if instance_config is None:
            return sample.name, image, truth
        return sample.name, image, truth, load_instances(sample, truth, run.classes)

    items = (item(s) for s in samples)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(samples), desc="evaluating", unit="image")
    scored = score_images(predictor, items, run.classes, instance_config=instance_config)
    out_dir = Path(out_dir)
    if save_masks:
        for s in scored:
            run.classes.save_mask(out_dir / "masks" / f"{s.name}.png", s.pred)
    return write_report(
        out_dir,
        scored,
        run.classes,
        title=f"Evaluation of {run.path} on {data_dir}",
        metric=metric or run.config.budget.monitor,
        worst=worst,
        extra={"run": str(run.path), "data": str(data_dir), "tta": tta},
    )
