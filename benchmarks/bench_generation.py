"""Generation benchmarks: diffusion U-Nets trained with the default plan, scored without Inception.

Each run is what a user types, ``unetkit train DATA --task generate [--condition ...] --out RUN
--max-minutes M``; the scores come from ``unetkit evaluate`` (:mod:`unetkit.tasks.generation_eval`).

- ``digits``: ``../shared/data/digits`` (1797 8x8 digits, 10 classes; the run holds out 20 %),
  class-conditional. A classifier trained on the run's training digits scores the class accuracy of
  samples for guidance 0 / 1 / 3 and DDPM 1000 vs DDIM 50 / 20 steps, the Frechet distance to the
  held-out digits in its feature space (floor: two disjoint real splits of that size) and the
  nearest-training-digit distance (against held-out real digits' own), with sampling time per image.
- ``sr``: super-resolution x4 by diffusion (``--condition low-res --scale 4``) trained on BSD400
  (the same 368 images as the regression run of ``bench_restoration.py``), scored on Set14 (Y, border 4)
  next to bicubic and that regression U-Net (``bench_out/restoration/runs/sr_x4``): PSNR, the
  consistency of the sample with its low-resolution input, and crops side by side.
- ``mask``: mask-to-image on ISBI 2012 (sections 00-19 train, 20-24 held out): EM sections generated
  from the held-out masks, segmented by a segmentation run trained on the real sections 00-19 (the
  default plan), Dice against the conditioning masks next to the same run on the real sections.

    flock /tmp/unetkit-heavy.lock python benchmarks/bench_generation.py digits --minutes 20 --threads 2
    flock /tmp/unetkit-heavy.lock python benchmarks/bench_generation.py sr --minutes 20 --threads 2
    flock /tmp/unetkit-heavy.lock python benchmarks/bench_generation.py mask --minutes 20 --threads 2
    python benchmarks/bench_generation.py --table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench_out" / "generation"
RESTORATION = ROOT / "bench_out" / "restoration"
#: (name, sampler, steps, guidance) of the digits table.
#: Samples per setting (the Frechet floor is computed at this size too).
DIGIT_SAMPLES = 200
DIGIT_SETTINGS = (
    ("ddim50_g0", "ddim", 50, 0.0), ("ddim50_g1", "ddim", 50, 1.0), ("ddim50_g3", "ddim", 50, 3.0),
    ("ddim20_g3", "ddim", 20, 3.0), ("ddpm1000_g3", "ddpm", 1000, 3.0),
)


def unetkit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "unetkit", *args], check=True, cwd=ROOT)


def finished(run: Path) -> bool:
    from unetkit.training import Run

    try:
        return Run.load(run).status not in ("running", "interrupted")
    except FileNotFoundError:
        return False


def train(run: Path, data: Path, minutes: float, threads: Optional[int], *options: str) -> Path:
    """Train ``run`` as a user would (reused when finished, resumed when interrupted)."""
    if finished(run):
        print(f"{run}: finished, reused")
        return run
    resume = ["--resume", str(run)] if (run / "state").is_dir() else []
    args = resume or [str(data), *options, "--out", str(run), "--max-minutes", str(minutes)]
    unetkit("train", *args, *(["--threads", str(threads)] if threads else []), "--no-progress")
    return run


def save(name: str, result: Any) -> None:
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


# ------------------------------------------------------------------------------------------ digits
def digits(minutes: float, threads: Optional[int]) -> None:
    from unetkit.generation_metrics import train_feature_classifier
    from unetkit.tasks.generation import GenerationTask
    from unetkit.tasks.generation_eval import _labels, _stack, evaluate_generation
    from unetkit.training import Run

    run_dir = train(OUT / "digits", DATA / "digits", minutes, threads, "--task", "generate")
    if threads:
        torch.set_num_threads(threads)
    run = Run.load(run_dir)
    data = GenerationTask().prepare_data(run.config)
    started = time.perf_counter()
    classifier, kind = train_feature_classifier(_stack(data.train, 8), _labels(data.train), seed=0)
    classifier_seconds = time.perf_counter() - started
    rows = []
    for name, sampler, steps, guidance in DIGIT_SETTINGS:
        summary = evaluate_generation(
            run, DATA / "digits", run_dir / f"eval-{name}", n=DIGIT_SAMPLES, steps=steps, sampler=sampler,
            guidance=guidance, classifier=classifier, device="cpu",
        )
        rows.append({"setting": name, "sampler": sampler, "steps": steps, "guidance": guidance, **{
            k: summary[k] for k in ("accuracy", "real_accuracy", "frechet", "frechet_floor", "nn_distance",
                                    "nn_distance_real", "copies", "n_samples", "seconds_per_sample")}})
        print(rows[-1])
    history = run.history
    save("digits", {
        "run": str(run_dir), "epochs": len(history), "steps": history[-1]["step"],
        "minutes": history[-1]["elapsed_s"] / 60, "best_val_loss": run.best["val_loss"],
        "classifier": kind, "classifier_seconds": classifier_seconds, "threads": torch.get_num_threads(),
        "rows": rows,
    })


# -------------------------------------------------------------------------------- super-resolution
def super_resolution(minutes: float, threads: Optional[int], steps: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_restoration import split_bsd
    from restoration_sets import sr_pairs

    from unetkit.tasks.generation_eval import evaluate_generation
    from unetkit.training import Run
    from unetkit.training.reporting import crop_panels, save_picture

    train_dir, _ = split_bsd()
    run_dir = train(
        OUT / "sr_x4", train_dir, minutes, threads,
        "--task", "generate", "--condition", "low-res", "--scale", "4",
    )
    if threads:
        torch.set_num_threads(threads)
    pairs = sr_pairs(DATA / "restoration" / "set14", RESTORATION / "set14grey_x4", 4, grey_as_rgb=False)
    report = run_dir / f"eval-set14-ddim{steps}"
    summary = evaluate_generation(Run.load(run_dir), pairs, report, steps=steps, device="cpu", progress=True)
    regression = RESTORATION / "runs" / "sr_x4"
    reg_summary = None
    if finished(regression):
        reg_report = regression / "eval-set14grey_x4-restored"  # with the restored images
        if not (reg_report / "summary.json").is_file():
            unetkit("evaluate", str(regression), str(pairs), "--out", str(reg_report))
        reg_summary = json.loads((reg_report / "summary.json").read_text())
        _side_by_side(report, reg_report, pairs, crop_panels, save_picture)
    save("sr_x4", {
        "run": str(run_dir), "steps": steps, "diffusion_psnr": summary["psnr"],
        "bicubic_psnr": summary["psnr_bicubic"], "consistency_psnr": summary["consistency_psnr"],
        "regression_psnr": reg_summary["psnr"] if reg_summary else None,
        "seconds_per_image": summary["seconds_per_image"], "threads": torch.get_num_threads(),
        "train_epochs": len(Run.load(run_dir).history), "per_image": summary["per_image"],
    })


def _side_by_side(report: Path, reg_report: Path, pairs: Path, crop_panels: Any, save_picture: Any) -> None:
    """bicubic | regression U-Net | diffusion | truth crops (luminance) for each Set14 image."""
    from unetkit.data.degrade import modcrop, rgb_to_ycbcr, upscale
    from unetkit.data.io import read_image

    def luminance(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32)
        return rgb_to_ycbcr(image)[:1].astype(np.float32) if image.shape[0] == 3 else image

    for target in sorted((pairs / "targets").glob("*")):
        name = target.stem
        truth = luminance(modcrop(read_image(target), 4))
        low = luminance(read_image(next((pairs / "inputs").glob(f"{name}.*"))))
        regression = luminance(read_image(next((reg_report / "restored").glob(f"{name}.*"))))
        generated = next((report / "samples").glob(f"{name}.*"))
        diffusion = luminance(read_image(generated))
        panels = [upscale(low, 4), regression, diffusion, truth]
        save_picture(report / "side_by_side" / f"{name}.png", crop_panels(panels, 255.0))


# ------------------------------------------------------------------------------------ mask-to-image
def mask_to_image(minutes: float, threads: Optional[int], steps: int, seg_minutes: float) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_train_isbi import make_split

    from unetkit.tasks.generation_eval import evaluate_generation
    from unetkit.training import Run

    train_dir, val_dir = make_split(OUT / "isbi_split")
    run_dir = train(
        OUT / "isbi_mask", train_dir, minutes, threads, "--task", "generate", "--condition", "mask",
        "--val-fraction", "0.1",
    )
    seg_dir = train(OUT / "isbi_segmenter", train_dir, seg_minutes, threads, "--val-fraction", "0.2")
    if threads:
        torch.set_num_threads(threads)
    summary = evaluate_generation(
        Run.load(run_dir), val_dir, run_dir / f"eval-heldout-ddim{steps}", steps=steps, segmenter=seg_dir,
        device="cpu", progress=True,
    )
    save("isbi_mask", {
        "run": str(run_dir), "segmenter": str(seg_dir), "steps": steps,
        "dice_generated": summary["dice_generated"], "dice_real": summary["dice_real"],
        "seconds_per_image": summary["seconds_per_image"], "per_image": summary["per_image"],
        "train_epochs": len(Run.load(run_dir).history), "threads": torch.get_num_threads(),
    })


# ------------------------------------------------------------------------------------------- table
def table() -> str:
    lines = []
    path = OUT / "digits.json"
    if path.is_file():
        d = json.loads(path.read_text())
        lines += [
            f"digits: {d['epochs']} epochs, {d['steps']} steps in {d['minutes']:.1f} min; classifier "
            f"({d['classifier']}) held-out real accuracy {d['rows'][0]['real_accuracy']:.3f}", "",
            "| sampler | steps | guidance | class accuracy | Frechet | floor | nn distance "
            "| real nn distance | copies | s per sample |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in d["rows"]:
            lines.append(
                f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | {r['accuracy']:.3f} | "
                f"{r['frechet']:.2f} | {r['frechet_floor']:.2f} | {r['nn_distance']:.3f} | "
                f"{r['nn_distance_real']:.3f} | "
                f"{r['copies']}/{r['n_samples']} | {r['seconds_per_sample']:.4f} |"
            )
        lines.append("")
    path = OUT / "sr_x4.json"
    if path.is_file():
        d = json.loads(path.read_text())
        reg = f"{d['regression_psnr']:.2f}" if d["regression_psnr"] else "n/a"
        lines += [
            "| Set14 x4 (Y) | bicubic | regression U-Net | diffusion (DDIM "
            f"{d['steps']}) | consistency (diffusion) | s per image |",
            "|---|---:|---:|---:|---:|---:|",
            f"| PSNR dB | {d['bicubic_psnr']:.2f} | {reg} | {d['diffusion_psnr']:.2f} | "
            f"{d['consistency_psnr']:.2f} | {d['seconds_per_image']:.1f} |", "",
        ]
    path = OUT / "isbi_mask.json"
    if path.is_file():
        d = json.loads(path.read_text())
        lines += [
            "| ISBI sections 20-24 | Dice on real sections | Dice on generated sections | s per section |",
            "|---|---:|---:|---:|",
            f"| segmentation run vs mask | {d['dice_real']:.4f} | {d['dice_generated']:.4f} | "
            f"{d['seconds_per_image']:.1f} |", "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", nargs="?", choices=("digits", "sr", "mask"))
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--seg-minutes", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=20, help="sampling steps of the sr and mask scores")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.bench == "digits":
        digits(args.minutes, args.threads)
    elif args.bench == "sr":
        super_resolution(args.minutes, args.threads, args.steps)
    elif args.bench == "mask":
        mask_to_image(args.minutes, args.threads, args.steps, args.seg_minutes)
    if args.table or not args.bench:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
