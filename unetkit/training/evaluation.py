"""Whole-image scoring shared by validation during training and ``unetkit evaluate``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
from skimage.measure import label as connected_components

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
from .reporting import failed_section, markdown_table, save_overlay, write_csv

#: Columns of the report tables, in this order when present.
REPORT_COLUMNS = (
    "dice", "iou", "precision", "recall", "pixel_error", "isbi_pixel_error", "rand_error", "rand_error_best",
    "hd95", "mean_iou", "route_rand_error", "route_pixel_error", "warping_error",
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
    route_pixels: Optional[np.ndarray] = None


def membrane_route_scores(
    probs: np.ndarray, truth: np.ndarray, config: Any
) -> tuple[np.ndarray, dict[str, float], np.ndarray]:
    """Score the membrane route on one section: probabilities ``(2, *S)``, truth class ids ``(*S)``.

    Returns the cell labels, the route's metrics (``route_rand_error``: adapted Rand error of the cells
    against the truth's 4-connected cells; ``warping_error`` of the route's mask, the thresholded map
    with the watershed lines drawn in as membrane, 2D only) and the mask's cell pixel counts ``(1, 3)``
    (TP, FP, FN) for the pooled ``route_pixel_error``.
    """
    from ..instances import instances_from_membranes
    from ..metrics import adapted_rand_error
    from ..warping import warping_error

    membrane = config.membrane_class
    labels, lines = instances_from_membranes(probs, config)
    cells = (probs[1 - membrane] > config.threshold) & ~lines
    true_cells = truth == 1 - membrane
    truth_cells = connected_components(true_cells, connectivity=1)
    metrics = {"route_rand_error": adapted_rand_error(labels, truth_cells)}
    if truth.ndim == 2:
        metrics["warping_error"] = warping_error(cells.astype(np.float32), true_cells)
    tp = int(np.count_nonzero(cells & true_cells))
    counts = np.array([[tp, int(np.count_nonzero(cells)) - tp, int(np.count_nonzero(true_cells)) - tp]])
    return labels, metrics, counts


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
    from ..instances import instances_from_probabilities

    scored = []
    target = predictor.target
    binary = classes.num_classes == 2 and target == "semantic"
    membrane = instance_config is not None and instance_config.method == "membrane"
    for name, image, truth, *true_instances in items:
        probs = predictor.predict_proba(image)
        pred = predictor.labels(probs)
        route_pixels = found = None
        if membrane:
            found, route_metrics, route_pixels = membrane_route_scores(probs, truth, instance_config)
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
        if membrane:
            metrics.update(route_metrics)
        if instance_config is not None and true_instances:
            if found is None:
                found = instances_from_probabilities(probs, instance_config, target)
            metrics.update(instance_scores(true_instances[0], found).to_dict())
        scored.append(Scored(name, image, truth, pred, metrics, sweep, pixel_sweep, route_pixels))
    return scored


def summary_of(scored: Sequence[Scored], classes: Any) -> dict[str, Any]:
    summary = summarize([s.metrics for s in scored], classes.num_classes, classes.names)
    sweeps = [s.rand_sweep for s in scored if s.rand_sweep is not None]
    if sweeps and len(sweeps) == len(scored):
        summary["rand_error_best"], summary["rand_threshold"] = best_rand_error(np.stack(sweeps))
        counts = np.stack([s.pixel_sweep for s in scored])
        summary["isbi_pixel_error"], summary["isbi_pixel_threshold"] = best_pixel_error(counts)
    route = [s.route_pixels for s in scored if s.route_pixels is not None]
    if route:
        summary["route_pixel_error"] = best_pixel_error(np.stack(route), thresholds=(0.5,))[0]
    return summary


def per_image_rows(scored: Sequence[Scored]) -> list[dict[str, Any]]:
    return [{"image": s.name, **{k: v for k, v in s.metrics.items() if k != "confusion"}} for s in scored]


def worst_first(scored: Sequence[Scored], metric: str) -> list[Scored]:
    """Images from the worst to the best by ``metric``; an undefined value (nan: the HD95 of an
    image with a missed or spurious class) counts as the worst of all."""
    sign = 1.0 if monitor_mode(metric) == "min" else -1.0

    def key(s: Scored) -> float:
        v = float(s.metrics.get(metric, math.nan))
        return -math.inf if math.isnan(v) else -sign * v

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
    failed: Sequence[str] = (),
) -> dict[str, Any]:
    """Write ``per_image.csv``, ``summary.json``, overlays of the ``worst`` images and ``report.md``;
    ``failed`` (one line per file that could not be scored) goes to both as ``failed``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summary_of(scored, classes)
    if extra:
        summary.update(extra)
    if failed:
        summary["failed"] = list(failed)
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
    if "hd95_misses" in summary:
        lines += [
            f"hd95: mean over the {len(scored) - summary['hd95_misses']} images where it is defined; "
            f"{summary['hd95_misses']} with a class missed or predicted where there is none (HD95 "
            "undefined) are left out of it and ranked worst.",
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
            f"Mean IoU over the dataset: {summary['global_iou']:.4f}"
            + (
                f" (classes absent from every image, left out: {', '.join(summary['absent_classes'])})"
                if summary["absent_classes"]
                else ""
            ),
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
    ]
    lines += failed_section(failed)
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    return summary


def evaluate_run(
    run_dir: Union[str, Path],
    data_dir: Union[str, Path],
    out_dir: Union[str, Path],
    *,
    tta: bool = False,
    precision: Optional[str] = None,
    save_masks: bool = True,
    worst: int = 4,
    metric: Optional[str] = None,
    progress: bool = False,
    instances: bool = False,
    instance_method: Optional[str] = None,
    noise: Optional[str] = None,
    generation: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Score a RUN's best model on a dataset folder and write the report (see :func:`write_report`).

    ``precision``: the network's arithmetic (:func:`unetkit.precision.inference_dtype`); ``None``: as the
    run predicts by default (:func:`unetkit.precision.prediction_precision`).

    A generation run draws samples and scores them instead
    (:func:`~unetkit.tasks.generation_eval.evaluate_generation`, with the ``generation`` options:
    ``n``, ``steps``, ``sampler``, ``guidance``, ``seed``, ``segmenter``).

    A restoration run is scored by PSNR/SSIM instead
    (:func:`~unetkit.tasks.restoration.evaluate_restoration`; ``noise`` replaces the noise of a
    denoising run for clean images; ``save_masks`` then saves the restored images).

    With ``save_masks`` the predicted masks go to ``out_dir/masks/`` in the encoding of the
    training masks (0/255, palette, RGB...), one per image, named like the image. With
    ``instances`` objects are scored too, against the dataset's ``instances/`` (or the connected
    components of the masks when it has none), by ``instance_method`` or the run's own route
    (:func:`~unetkit.instances.default_instance_method`). A run on membrane data always reports its
    membrane route's scores.
    """
    from ..data.io import DataError, failure_message
    from ..data.samples import load_instances, load_sample, scan_dataset
    from ..inference import Predictor
    from ..inference.agreement import read_agreement
    from ..instances import instance_config_for
    from ..precision import prediction_precision
    from .run import Run

    run = Run.load(run_dir)
    if run.task == "generation":
        from ..tasks.generation_eval import evaluate_generation

        return evaluate_generation(run, data_dir, out_dir, progress=progress, **(generation or {}))
    if run.task == "restoration":
        from ..tasks.restoration import evaluate_restoration

        predictor = Predictor.from_run(run.path, tta=tta, precision=precision)
        return evaluate_restoration(
            run, data_dir, out_dir, predictor=predictor, noise=noise, save_outputs=save_masks, worst=worst,
            progress=progress,
        )
    samples, failed = scan_dataset(data_dir)
    cfg = run.config.data
    membrane_scores = cfg.membrane_class is not None and instance_method in (None, "membrane")
    instance_config = (
        instance_config_for(cfg.target, run.classes.names, cfg.membrane_class, instance_method)
        if instances or membrane_scores else None
    )
    predictor = Predictor(
        run.model, classes=run.classes, tta=tta, object_diameter=cfg.object_diameter, target=cfg.target,
        precision=precision or prediction_precision(run.config.precision),
        label_agreement=read_agreement(run.path),
    )
    def item(sample: Any) -> tuple:
        image, truth = load_sample(sample, run.classes, cfg.normalize)
        if instance_config is None:
            return sample.name, image, truth
        return sample.name, image, truth, load_instances(sample, truth, run.classes)

    if progress:
        from tqdm.auto import tqdm

        samples = tqdm(samples, desc="evaluating", unit="image")
    scored = []
    for sample in samples:
        try:
            scored += score_images(predictor, [item(sample)], run.classes, instance_config=instance_config)
        except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the evaluation
            failed.append(failure_message(sample.image, exc))
    if not scored:
        raise DataError(f"{data_dir}: no image could be scored:\n  - " + "\n  - ".join(failed))
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
        failed=failed,
    )
