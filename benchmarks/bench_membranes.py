"""Objects in membrane data (ISBI 2012): the membrane route against the connected components of the map.

Uses the run of ``bench_train_isbi.py --model default`` (the default command, sections 00-19 / 20-24):

    flock /tmp/unetkit-heavy.lock python benchmarks/bench_train_isbi.py --model default --minutes 20
    python benchmarks/bench_membranes.py --tune      # the route's settings, on the validation sections
    python benchmarks/bench_membranes.py             # the table: both routes on the same run

The table scores, on sections 20-24 by the challenge's protocol:

- *components of the thresholded map* (the previous route): Rand error of the 4-connected cells at the
  best single threshold for the set (0.0-0.9), pixel error 1 - max F of the cell pixels over the same
  thresholds, warping error at 0.5;
- *membrane route* (``unetkit predict RUN VAL --instances``, the default for a membrane run): Rand error
  of the written cell labels, pixel error of the written mask (one map, so no threshold to pick) and
  its warping error.

``--tune`` prints the route's Rand error for a grid of settings on the validation sections, from the
probabilities the run predicts; the defaults of :func:`unetkit.instances.membrane_config` come from it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.measure import label

from unetkit.data.io import read_image
from unetkit.instances import InstanceConfig, instances_from_membranes
from unetkit.metrics import (
    adapted_rand_error,
    best_pixel_error,
    best_rand_error,
    pixel_counts_by_threshold,
    rand_errors_by_threshold,
)
from unetkit.warping import warping_error

UNETKIT = [sys.executable, "-m", "unetkit"]


def validation_probabilities(run: Path, val_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, probabilities (2, H, W), truth (H, W))`` of each validation section."""
    from unetkit.data.samples import find_samples, load_sample
    from unetkit.inference import Predictor
    from unetkit.training import Run

    info = Run.load(run)
    predictor = Predictor.from_run(run)
    out = []
    for sample in find_samples(val_dir):
        image, truth = load_sample(sample, info.classes, info.config.data.normalize)
        out.append((sample.name, predictor.predict_proba(image), truth))
    return out


def tune(sections: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    print("| smoothing | seed threshold | merge threshold | min seed size | Rand error |")
    print("|---|---|---|---|---|")
    for sigma, seed, merge, min_size in itertools.product(
        [0.0, 1.0, 2.0], [0.8, 0.9, 0.95, 0.98], [None, 0.3, 0.5], [16, 64]
    ):
        config = InstanceConfig(method="membrane", smoothing=sigma, seed_threshold=seed,
                                merge_threshold=merge, min_size=min_size)
        errors = [
            adapted_rand_error(instances_from_membranes(p, config)[0], label(t == 1, connectivity=1))
            for _, p, t in sections
        ]
        print(f"| {sigma:g} | {seed:g} | {merge if merge is not None else '-'} | {min_size} "
              f"| {np.mean(errors):.4f} |", flush=True)


def table(run: Path, val_dir: Path, sections: list[tuple[str, np.ndarray, np.ndarray]]) -> dict:
    out = run / "predict-instances"
    subprocess.run([*UNETKIT, "predict", str(run), str(val_dir / "images"), "--out", str(out),
                    "--instances"], check=True)
    rand_sweeps = np.stack([rand_errors_by_threshold(p[1], t) for _, p, t in sections])
    pixel_sweeps = np.stack([pixel_counts_by_threshold(p[1], t) for _, p, t in sections])
    components_rand, components_threshold = best_rand_error(rand_sweeps)
    components_pixel, pixel_threshold = best_pixel_error(pixel_sweeps)
    components_warping = float(np.mean([warping_error(p[1], t) for _, p, t in sections]))
    route_rand, route_warping, route_counts = [], [], []
    for name, _, truth in sections:
        cells = read_image(out / f"{name}_instances.tif")[0]
        mask = np.asarray(Image.open(out / f"{name}.png")) > 0
        route_rand.append(adapted_rand_error(cells, label(truth == 1, connectivity=1)))
        route_warping.append(warping_error(mask.astype(np.float32), truth))
        route_counts.append(pixel_counts_by_threshold(mask.astype(np.float32), truth, thresholds=(0.5,)))
    result = {
        "components": {"rand_error": components_rand, "rand_threshold": components_threshold,
                       "pixel_error": components_pixel, "pixel_threshold": pixel_threshold,
                       "warping_error": components_warping},
        "membrane_route": {"rand_error": float(np.mean(route_rand)),
                           "pixel_error": best_pixel_error(np.stack(route_counts), thresholds=(0.5,))[0],
                           "warping_error": float(np.mean(route_warping))},
        "per_section_route_rand": dict(zip([s[0] for s in sections], map(float, route_rand))),
    }
    (run / "membranes.json").write_text(json.dumps(result, indent=2))
    c, m = result["components"], result["membrane_route"]
    print("| route | Rand error | pixel error | warping error |")
    print("|---|---|---|---|")
    print(f"| connected components of the thresholded map (ISBI protocol: best threshold for the set) "
          f"| {c['rand_error']:.4f} ({c['rand_threshold']:g}) | {c['pixel_error']:.4f} "
          f"({c['pixel_threshold']:g}) | {c['warping_error']:.6f} (0.5) |")
    print(f"| membrane route (`predict --instances`) | {m['rand_error']:.4f} | {m['pixel_error']:.4f} "
          f"| {m['warping_error']:.6f} |")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="/tmp/unetkit-bench/isbi")
    parser.add_argument("--run", help="the run to score (default: WORK/run-default)")
    parser.add_argument("--tune", action="store_true", help="grid of the route's settings on the validation")
    args = parser.parse_args()
    work = Path(args.work)
    run = Path(args.run) if args.run else work / "run-default"
    val_dir = work / "split" / "val"
    sections = validation_probabilities(run, val_dir)
    if args.tune:
        tune(sections)
    else:
        table(run, val_dir, sections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
