"""Do reduced-precision predictions give the same labels? Trained runs on their validation images.

For each RUN and its validation folder, every image is predicted (PyTorch, whole image by tiles, as
``unetkit evaluate`` does) in float32 and in each of ``--precisions``; the table gives the share of
pixels whose label differs from float32, the largest probability difference, the Dice of each against
the truth, and the time. ``unetkit.precision.inference_dtype``'s ``auto`` may pick a reduced precision
only where the share of identical labels is >= 99.9% on every data set measured here.

    python benchmarks/bench_precision.py \\
        --pair isbi /tmp/unetkit-bench/isbi/run-default-t1 /tmp/unetkit-bench/isbi/split/val \\
        --pair dsb2018 /tmp/unetkit-bench/dsb2018/run /tmp/unetkit-bench/dsb2018/split/val \\
        --precisions bf16 fp16
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from unetkit.data.samples import load_sample, scan_dataset
from unetkit.inference import Predictor
from unetkit.metrics import segmentation_metrics
from unetkit.training.run import Run


def measure(name: str, run_dir: str, data_dir: str, precisions: list[str], limit: int) -> list[tuple]:
    run = Run.load(run_dir)
    cfg = run.config.data
    samples, _ = scan_dataset(data_dir)
    samples = samples[:limit]

    def predictor(precision: str) -> Predictor:
        return Predictor(run.model, classes=run.classes, object_diameter=cfg.object_diameter,
                         target=cfg.target, membrane_class=cfg.membrane_class, precision=precision,
                         device="cpu")

    items = [load_sample(s, run.classes, cfg.normalize) for s in samples]
    results: dict[str, dict] = {}
    for precision in ["fp32", *precisions]:
        p = predictor(precision)
        start = time.perf_counter()
        probs = [p.predict_proba(image) for image, _ in items]
        seconds = time.perf_counter() - start
        labels = [p.labels(prob) for prob in probs]
        results[precision] = {"probs": probs, "labels": labels, "seconds": seconds}
        print(f"{name} {precision}: {seconds:.1f} s", file=sys.stderr, flush=True)
    classes = run.classes.num_classes
    ref = results["fp32"]
    rows = []
    pixels = sum(t.size for _, t in items)
    for precision, res in results.items():
        differ = sum(int((a != b).sum()) for a, b in zip(res["labels"], ref["labels"]))
        per_image = [float((a == b).mean()) for a, b in zip(res["labels"], ref["labels"])]
        max_diff = max(float(np.abs(a[: p.num_classes] - b[: p.num_classes]).max())
                       for a, b in zip(res["probs"], ref["probs"]))
        scores = [segmentation_metrics(lab, truth, classes, ignore_index=run.classes.ignore_index,
                                       boundary_metrics=False)["mean_dice"]
                  for lab, (_, truth) in zip(res["labels"], items)]
        mean_dice = float(np.mean(scores))
        rows.append((name, precision, len(items), 1 - differ / pixels, min(per_image), max_diff, mean_dice,
                     res["seconds"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "RUN", "DATA"), required=True)
    parser.add_argument("--precisions", nargs="+", default=["bf16"], choices=["bf16", "fp16"])
    parser.add_argument("--limit", type=int, default=1000, help="at most this many images per data set")
    args = parser.parse_args()
    rows = [row for name, run, data in args.pair
            for row in measure(name, run, data, args.precisions, args.limit)]
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"native bf16: {torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()}\n")
    print("| data set | precision | images | identical labels (all pixels) | worst image | max prob diff "
          "| mean Dice | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, precision, n, same, worst, diff, mean_dice, seconds in rows:
        print(f"| {name} | {precision} | {n} | {same:.4%} | {worst:.4%} | {diff:.2e} | {mean_dice:.4f} "
              f"| {seconds:.1f} |")


if __name__ == "__main__":
    main()
