"""Instance segmentation: route 1 (foreground + watershed), route 2 (3-class target) and the classical
baseline (Otsu + distance watershed), scored with the object-level metrics.

Run by hand (heavy: trains two or three networks):

    .venv/bin/python benchmarks/bench_instances.py dsb2018 --minutes 20 --work /tmp/bench_instances
    .venv/bin/python benchmarks/bench_instances.py synthetic --minutes 3 --work /tmp/bench_instances

``dsb2018`` uses ``../shared/data/dsb2018`` with a seeded validation split of 40 images (the data stay where
they are; the split is made of symbolic links under ``--work``). ``synthetic`` trains on generated crowded
cells and adds route 1 trained with the paper's border weight map, to show what the map buys.
Prints one markdown table: mean over validation images of AP@0.5 (TP / (TP + FP + FN)), the DSB score,
F1@0.5, AJI and PQ.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from unetkit.config import TrainConfig
from unetkit.data.dataset import Sample, find_samples, split_samples
from unetkit.data.io import read_image, read_label_image
from unetkit.data.normalize import NormalizeConfig, normalize_image
from unetkit.data.synthetic import write_synthetic_dataset
from unetkit.instance_metrics import instance_scores
from unetkit.instances import (
    InstanceConfig,
    instances_from_foreground,
    instances_from_three_class,
    otsu_watershed,
)
from unetkit.training import train

DSB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018"
METRICS = ("ap_50", "dsb_score", "f1_50", "aji", "panoptic_quality")


def link_split(samples: Sequence[Sample], folder: Path) -> Path:
    """A dataset folder of symbolic links to ``samples`` (images/, masks/, instances/)."""
    for sample in samples:
        for kind, path in (("images", sample.image), ("masks", sample.mask), ("instances", sample.instances)):
            if path is None:
                continue
            target = folder / kind / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.symlink(path.resolve(), target)
    return folder


def train_route(train_dir: Path, val_dir: Path, out: Path, minutes: float, *, target: str,
                weight_map: bool) -> Path:
    overrides = {
        "data": {"train": str(train_dir), "val": str(val_dir), "target": target, "weight_map": weight_map},
        "budget": {"max_minutes": minutes, "epochs": 10_000},
        "out": str(out),
    }
    if weight_map:
        overrides["loss"] = {"name": "weighted_ce"}
    if target == "three_class":
        overrides["model"] = {"num_classes": 3}
    start = time.perf_counter()
    run = train(TrainConfig.from_dict(overrides), progress_bar=False, log=lambda _: None)
    print(f"trained {out.name} in {(time.perf_counter() - start) / 60:.1f} min: {run!r}", flush=True)
    return run.path


def score(samples: Sequence[Sample], segment: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
    rows = []
    for sample in samples:
        image = read_image(sample.image)
        truth = read_label_image(sample.instances)
        rows.append(instance_scores(truth, segment(image)).to_dict())
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}


def predictor_route(run_dir: Path, route: str, config: InstanceConfig) -> Callable[[np.ndarray], np.ndarray]:
    from unetkit.inference import Predictor

    predictor = Predictor.from_run(run_dir)

    def segment(image: np.ndarray) -> np.ndarray:
        probabilities = predictor.predict_proba(image)
        if route == "three_class":
            return instances_from_three_class(probabilities, config)
        return instances_from_foreground(probabilities[1], config)

    return segment


def classical(config: InstanceConfig) -> Callable[[np.ndarray], np.ndarray]:
    norm = NormalizeConfig()
    return lambda image: otsu_watershed(normalize_image(image, norm), config)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=("dsb2018", "synthetic"))
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per network")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_instances"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = args.work / args.dataset
    if args.dataset == "dsb2018":
        samples = find_samples(DSB)
        train_samples, val_samples = split_samples(samples, 40 / len(samples), args.seed)
    else:
        train_samples = find_samples(write_synthetic_dataset(work / "gen_train", 24, size=256, seed=1))
        val_samples = find_samples(write_synthetic_dataset(work / "gen_val", 8, size=256, seed=2))
    train_dir = link_split(train_samples, work / "train")
    val_dir = link_split(val_samples, work / "val")
    print(f"{args.dataset}: {len(train_samples)} training, {len(val_samples)} validation images", flush=True)

    instance_config = InstanceConfig()
    results: dict[str, dict[str, float]] = {
        "classical (Otsu + distance watershed)": score(val_samples, classical(instance_config)),
    }
    routes = [("route1", "route 1: foreground + watershed", "semantic", False),
              ("route2", "route 2: 3-class (interior/border)", "three_class", False)]
    if args.dataset == "synthetic":
        routes.insert(1, ("route1_weighted", "route 1 + border weight map", "semantic", True))
    for key, name, target, weight_map in routes:
        run_dir = train_route(
            train_dir, val_dir, work / key, args.minutes, target=target, weight_map=weight_map
        )
        results[name] = score(val_samples, predictor_route(run_dir, target, instance_config))

    print(f"\n| method ({args.dataset}, {len(val_samples)} val images, {args.minutes:g} min training) | "
          + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for name, values in results.items():
        print(f"| {name} | " + " | ".join(f"{values[m]:.3f}" for m in METRICS) + " |")


if __name__ == "__main__":
    main()
