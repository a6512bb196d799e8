"""Instance segmentation: route 1 (foreground + watershed, or connected components), route 2 (3-class
target), route 3 (flows target), route 4 (distance target) and the classical baseline (Otsu + distance
watershed), scored with the object-level metrics.

Run by hand (heavy: trains three or four networks, each exactly as a user would, with the default plan):

    unetkit train TRAIN --val VAL --out route1 --max-minutes M --target semantic        # route 1
    unetkit train TRAIN --val VAL --out route2 --max-minutes M --target three-class     # route 2
    unetkit train TRAIN --val VAL --out route3 --max-minutes M --target flows           # route 3
    unetkit train TRAIN --val VAL --out route4 --max-minutes M --target distance        # route 4

    flock /tmp/unetkit-heavy.lock python benchmarks/bench_instances.py dsb2018 --minutes 20
    flock /tmp/unetkit-heavy.lock python benchmarks/bench_instances.py synthetic --minutes 3

``dsb2018`` uses ``../shared/data/dsb2018`` with the 40-image validation split of
``bench_train_datasets.py`` (symbolic links under ``--work``), and takes that script's dsb2018 run as
route 1 when it exists (the same command, so it is not trained twice); any route whose run folder
under ``--work`` holds a finished model is scored without training it again. ``synthetic`` trains on
generated crowded cells and adds route 1 trained with the paper's border weight map
(``--loss.name weighted_ce --data.weight-map true``), to show what the map buys. Prints one markdown
table: mean over validation images of AP@0.5 (TP / (TP + FP + FN)), the DSB score, F1@0.5, AJI and PQ;
for dsb2018 also AP@0.5 per imaging modality (the StarDist reference figures are for fluorescence).

``dsb2018 --select-on N`` trains on the training split less N of its images (seeded), which pick each
run's best epoch instead of the 40 validation images (runs under ``--work``/dsb2018/select-N/): the 40
are then images the model and its choices never saw.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from bench_train_datasets import finished, link_samples, split_dsb

from unetkit.data.io import read_image, read_label_image
from unetkit.data.normalize import NormalizeConfig, normalize_image
from unetkit.data.samples import Sample, find_samples
from unetkit.data.synthetic import write_synthetic_dataset
from unetkit.instance_metrics import instance_scores
from unetkit.instances import InstanceConfig, instances_from_probabilities, otsu_watershed

DSB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018"
METRICS = ("ap_50", "dsb_score", "f1_50", "aji", "panoptic_quality")
UNETKIT = [sys.executable, "-m", "unetkit"]
STEPS_PER_EPOCH = 10
ROUTE_FLAGS = {
    "semantic": ["--target", "semantic"],
    "weighted": ["--target", "semantic", "--loss.name", "weighted_ce", "--data.weight-map", "true"],
    "three_class": ["--target", "three-class"],
    "flows": ["--target", "flows"],
    "distance": ["--target", "distance"],
}


def budget_flags(minutes: float, steps: Optional[int]) -> list[str]:
    """``unetkit train`` options for a budget of ``minutes``, or of ``steps`` steps of batch 4 (10 per epoch):
    the same for every route however busy the machine is."""
    if steps is None:
        return ["--max-minutes", f"{minutes:g}"]
    epochs = max(1, steps // STEPS_PER_EPOCH)
    return ["--budget.epochs", str(epochs), "--data.batch-size", "4", "--data.patches-per-epoch",
            str(4 * STEPS_PER_EPOCH)]


def train_route(
    train_dir: Path, val_dir: Path, out: Path, budget: Sequence[str], flags: Sequence[str]
) -> Path:
    """``unetkit train`` with the default plan, the ``budget`` options and ``flags``; returns the run."""
    cmd = [*UNETKIT, "train", str(train_dir), "--val", str(val_dir), "--out", str(out)]
    cmd += [*budget, "--no-progress", *flags]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"trained {out.name} in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return out


def score(samples: Sequence[Sample], segment: Callable[[np.ndarray], np.ndarray]) -> list[dict[str, float]]:
    """Object scores of ``segment`` on each sample (one dict per image, named by ``"name"``)."""
    rows = []
    for sample in samples:
        image = read_image(sample.image)
        truth = read_label_image(sample.instances)
        rows.append({"name": sample.name, **instance_scores(truth, segment(image)).to_dict()})
    return rows


def mean(rows: Sequence[dict], names: Optional[set[str]] = None) -> dict[str, float]:
    picked = [r for r in rows if names is None or r["name"] in names]
    return {m: float(np.mean([r[m] for r in picked])) if picked else float("nan") for m in METRICS}


def dsb_modalities() -> dict[str, str]:
    """Image id -> modality guess from dsb2018's ``index.tsv``."""
    with open(DSB / "index.tsv", newline="") as fh:
        return {row["id"]: row["modality_guess"] for row in csv.DictReader(fh, delimiter="\t")}


def predictor_route(run_dir: Path, config: InstanceConfig) -> Callable[[np.ndarray], np.ndarray]:
    from unetkit.inference import Predictor

    predictor = Predictor.from_run(run_dir)
    target = predictor.target
    return lambda image: instances_from_probabilities(predictor.predict_proba(image), config, target)


def classical(config: InstanceConfig) -> Callable[[np.ndarray], np.ndarray]:
    norm = NormalizeConfig()
    return lambda image: otsu_watershed(normalize_image(image, norm), config)


def split_training(train_dir: Path, work: Path, n: int, seed: int = 1) -> tuple[Path, Path]:
    """``train_dir`` less ``n`` random images, and those ``n`` (symbolic links under ``work``)."""
    names = sorted(p.name for p in (train_dir / "images").glob("*.png"))
    order = np.random.default_rng(seed).permutation(len(names))
    picked = sorted(names[i] for i in order[:n])
    rest = sorted(set(names) - set(picked))
    subs = ("images", "masks", "instances")
    return (link_samples(train_dir, work / "train", rest, subs),
            link_samples(train_dir, work / "select", picked, subs))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=("dsb2018", "synthetic"))
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per network")
    parser.add_argument("--work", type=Path, default=Path("/tmp/unetkit-bench"))
    parser.add_argument("--steps", type=int, help="train each network for this many steps of batch 4 instead "
                        "of --minutes (equal budgets on a machine that other jobs share)")
    parser.add_argument("--routes", nargs="+", help="only these routes (run folder names: route1, "
                        "route1_weighted, route2, route3, route4)")
    parser.add_argument("--threads", type=int, help="torch threads per training (runs sharing the machine)")
    parser.add_argument("--select-on", type=int, metavar="N", help="dsb2018: choose the best epoch on N "
                        "training images, so the scored validation images stay unseen")
    args = parser.parse_args(argv)
    budget = budget_flags(args.minutes, args.steps)
    described = f"{args.steps} steps" if args.steps else f"{args.minutes:g} min"
    work = args.work / args.dataset
    # (run folder, row name, ROUTE_FLAGS key, instance method)
    routes = [("route1", "route 1: foreground + watershed", "semantic", "watershed"),
              ("route2", "route 2: 3-class (interior/border)", "three_class", "three_class"),
              ("route3", "route 3: flows (towards each object's centre)", "flows", "flows"),
              ("route4", "route 4: distance to the outline + watershed", "distance", "distance")]
    if args.dataset == "dsb2018":
        train_dir, val_dir = split_dsb(work / "split")
        done = {"route1": work / "run"}  # bench_train_datasets.py --dataset dsb2018: the same command
        select_dir = val_dir
        if args.select_on:
            work = work / f"select-{args.select_on}"
            train_dir, select_dir = split_training(train_dir, work, args.select_on)
            done = {}
    else:
        train_dir = write_synthetic_dataset(work / "gen_train", 24, size=256, seed=1)
        val_dir = write_synthetic_dataset(work / "gen_val", 8, size=256, seed=2)
        select_dir = val_dir
        done = {}
        routes.insert(1, ("route1_weighted", "route 1 + border weight map", "weighted", "watershed"))
    if args.routes:
        routes = [r for r in routes if r[0] in args.routes]
    val_samples = find_samples(val_dir)
    print(f"{args.dataset}: {len(find_samples(train_dir))} training, {len(val_samples)} validation images",
          flush=True)

    instance_config = InstanceConfig()
    results = {"classical (Otsu + distance watershed)": score(val_samples, classical(instance_config))}
    components = InstanceConfig(method="components")
    for key, name, kind, method in routes:
        run_dir = done.get(key, work / key)
        run_dir = run_dir if finished(run_dir) else work / key
        if finished(run_dir):
            print(f"{name}: using the finished run {run_dir}", flush=True)
        else:
            flags = ROUTE_FLAGS[kind] + (["--threads", str(args.threads)] if args.threads else [])
            run_dir = train_route(train_dir, select_dir, work / key, budget, flags)
        results[name] = score(val_samples, predictor_route(run_dir, replace(instance_config, method=method)))
        if key == "route1":
            results["route 1: foreground + connected components"] = score(
                val_samples, predictor_route(run_dir, components)
            )

    print(f"\n| method ({args.dataset}, {len(val_samples)} val images, {described} training) | "
          + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for name, rows in results.items():
        values = mean(rows)
        print(f"| {name} | " + " | ".join(f"{values[m]:.3f}" for m in METRICS) + " |")
    if args.dataset == "dsb2018":
        modality = dsb_modalities()
        kinds = sorted({modality[s.name] for s in val_samples})
        counts = {k: sum(modality[s.name] == k for s in val_samples) for k in kinds}
        print("\nAP@0.5 by modality (" + ", ".join(f"{k}: {counts[k]} images" for k in kinds) + ")\n")
        print("| method | " + " | ".join(kinds) + " |")
        print("|---" * (len(kinds) + 1) + "|")
        for name, rows in results.items():
            by_kind = [
                mean(rows, {s.name for s in val_samples if modality[s.name] == k})["ap_50"] for k in kinds
            ]
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in by_kind) + " |")


if __name__ == "__main__":
    main()
