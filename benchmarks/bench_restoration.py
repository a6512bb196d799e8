"""Restoration benchmarks: denoising and super-resolution trained on BSD400 with the default plan.

Each run is what a user types, ``unetkit train DATA [--val VAL] --task ... --out RUN --max-minutes M``:

- ``denoise_s15``, ``denoise_s25``, ``denoise_s50``: clean BSD images, ``--noise gaussian:S`` (validated on
  Set12), one model per noise level;
- ``denoise_blind``: ``--noise gaussian:0-55`` (one blind model for every level);
- ``ne2ne_s25``: Neighbor2Neighbor (``--self-supervised neighbor2neighbor``) on the same BSD images
  with sigma-25 noise added once (it never sees a clean image; validated by the loss between neighbour
  sub-images of held-out noisy images);
- ``n2v_s25``: Noise2Void (``--self-supervised noise2void``) on the same noisy images (validated by its
  blind-spot loss);
  ``n2v_s25_mask02pct`` masks the paper's 0.2 % of the pixels instead of the plan's 2 %,
  ``n2v_s25_mask5pct`` 5 %, ``n2v_s25_median`` replaces them by the neighbourhood's median (N2V2);
- ``sr_x2``, ``sr_x4``: ``--task super-resolve --scale 2|4`` (validated on Set14).

The last 32 BSD400 images (``test_369``..``test_400``) are held out of training and validation:
every model is also scored on them ("never seen"). Scores come from ``unetkit evaluate RUN PAIRS``, and
with ``--tta`` (the self-ensemble over flips and 90-degree rotations), on pairs made by
:mod:`restoration_sets` (noise seeded per image, not clipped; super-resolution inputs bicubic-downscaled
and rounded to 8 bits, scored on Y with a border of ``scale`` px), next to the baselines of
``bench_restoration_baselines.py`` (noisy input, BM3D, bicubic) and published figures.

    python benchmarks/bench_restoration.py --runs denoise_s15 n2v_s25 --threads 1 --minutes 20 &
    python benchmarks/bench_restoration.py --runs denoise_s50 denoise_blind --threads 1 --minutes 20
    python benchmarks/bench_restoration.py --table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

from restoration_sets import noisy_images, noisy_pairs, sr_pairs

from unetkit.training import Run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "restoration"
OUT = ROOT / "bench_out" / "restoration"
HELD_OUT = 32
SIGMAS = (15, 25, 50)
SCALES = (2, 4)
NOISE2VOID = ["--task", "denoise", "--self-supervised", "noise2void"]
#: run name -> (training folder key, validation folder, unetkit train options)
RUNS = {
    "denoise_s25": ("clean", DATA / "set12", ["--task", "denoise", "--noise", "gaussian:25"]),
    "denoise_s15": ("clean", DATA / "set12", ["--task", "denoise", "--noise", "gaussian:15"]),
    "denoise_s50": ("clean", DATA / "set12", ["--task", "denoise", "--noise", "gaussian:50"]),
    "denoise_blind": ("clean", DATA / "set12", ["--task", "denoise", "--noise", "gaussian:0-55"]),
    "ne2ne_s25": ("noisy", None, ["--task", "denoise", "--self-supervised", "neighbor2neighbor"]),
    "n2v_s25": ("noisy", None, NOISE2VOID),
    "n2v_s25_mask02pct": ("noisy", None, [*NOISE2VOID, "--restoration.blind-spot-fraction", "0.002"]),
    "n2v_s25_mask5pct": ("noisy", None, [*NOISE2VOID, "--restoration.blind-spot-fraction", "0.05"]),
    "n2v_s25_median": ("noisy", None, [*NOISE2VOID, "--restoration.blind-spot-mode", "median"]),
    "sr_x2": ("clean", DATA / "set14", ["--task", "super-resolve", "--scale", "2"]),
    "sr_x4": ("clean", DATA / "set14", ["--task", "super-resolve", "--scale", "4"]),
}
#: Published PSNR (dB): BSD68 for denoising (sigma -> method -> dB), Set14 (Y) for super-resolution.
PUBLISHED = {
    "denoise": {
        15: {"BM3D": 31.07, "DnCNN": 31.73},
        25: {"BM3D": 28.57, "DnCNN": 29.23, "DRUNet": 29.48, "N2V paper U-Net (supervised)": 29.06,
             "Noise2Void": 27.71},
        50: {"BM3D": 25.62, "DnCNN": 26.23},
    },
    "sr": {2: {"bicubic": 30.24, "SRCNN": 32.42, "VDSR": 33.03}, 4: {"bicubic": 26.00, "SRCNN": 27.49,
                                                                     "VDSR": 28.01}},
}


def unetkit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "unetkit", *args], check=True, cwd=ROOT)


def split_bsd() -> tuple[Path, Path]:
    """BSD400 as two folders of symlinks: training (first 368) and held out (last 32)."""
    train, test = OUT / "data" / "bsd_train", OUT / "data" / "bsd_test"
    images = sorted((DATA / "bsd400").glob("*.png"))
    for folder, part in ((train, images[:-HELD_OUT]), (test, images[-HELD_OUT:])):
        folder.mkdir(parents=True, exist_ok=True)
        for path in part:
            link = folder / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
    return train, test


def finished(run: Path) -> bool:
    """A run whose training ended (done, budget or early stop), not one interrupted or missing."""
    try:
        return Run.load(run).status not in ("running", "interrupted")
    except FileNotFoundError:
        return False


def train(name: str, minutes: float, threads: Optional[int]) -> Path:
    clean, _ = split_bsd()
    key, val, options = RUNS[name]
    data = clean if key == "clean" else noisy_images(clean, OUT / "data" / "bsd_train_noisy25", 25)
    run = OUT / "runs" / name
    if finished(run):
        print(f"{run}: finished, reused")
        return run
    resume = ["--resume", str(run)] if (run / "state").is_dir() else []
    args = resume or [str(data), *(["--val", str(val)] if val else []), *options, "--out", str(run),
                      "--max-minutes", str(minutes)]
    unetkit("train", *args, *(["--threads", str(threads)] if threads else []), "--no-progress")
    return run


def pair_sets() -> dict[str, Path]:
    """Every scored folder of pairs: ``set12_s{S}``, ``bsdtest_s{S}``, ``set14_x{X}``, ``bsdtest_x{X}``."""
    _, test = split_bsd()
    sets = {}
    for sigma in SIGMAS:
        sets[f"set12_s{sigma}"] = noisy_pairs(DATA / "set12", OUT / f"set12_sigma{sigma}", sigma)
        sets[f"bsdtest_s{sigma}"] = noisy_pairs(test, OUT / f"bsdtest_sigma{sigma}", sigma)
    for scale in SCALES:
        # Grey images stay grey (Set14's bridge), as the published MATLAB figures score them: the
        # bicubic row then reproduces the published bicubic figures (30.24 / 26.00 dB).
        sets[f"set14_x{scale}"] = sr_pairs(
            DATA / "set14", OUT / f"set14grey_x{scale}", scale, grey_as_rgb=False
        )
        sets[f"bsdtest_x{scale}"] = sr_pairs(test, OUT / f"bsdtest_x{scale}", scale, grey_as_rgb=False)
    return sets


def score(run: Path, pairs: Path, tta: bool = False) -> dict:
    """``unetkit evaluate RUN PAIRS`` (``--tta``: the mean over the 8 flips and 90-degree rotations,
    the literature's self-ensemble), cached in the run folder."""
    report = run / f"eval-{pairs.name}{'-tta' if tta else ''}"
    if not (report / "summary.json").is_file():
        tta_option = ["--tta"] if tta else []
        unetkit("evaluate", str(run), str(pairs), "--out", str(report), "--no-masks", *tta_option)
    return json.loads((report / "summary.json").read_text())


def table() -> str:
    sets = pair_sets()
    path = OUT / "baselines.json"
    baselines = json.loads(path.read_text()) if path.is_file() else {}
    bm3d = {int(d["sigma"]): d["mean"]["bm3d_psnr"] for d in baselines.get("denoising", [])}
    runs = {name: OUT / "runs" / name for name in RUNS if finished(OUT / "runs" / name)}
    lines = ["| task | level | scored on | input | baseline | unetkit | unetkit --tta | model | "
             "published (BSD68 / Set14) |",
             "|---|---|---|---:|---:|---:|---:|---|---|"]
    for sigma in SIGMAS:
        models = [
            m for m in runs if m in (f"denoise_s{sigma}", "denoise_blind")
            or m.startswith((f"n2v_s{sigma}", f"ne2ne_s{sigma}"))
        ]
        for where in (f"set12_s{sigma}", f"bsdtest_s{sigma}"):
            base = bm3d.get(sigma) if where.startswith("set12") else None
            for model in models:
                s, t = score(runs[model], sets[where]), score(runs[model], sets[where], tta=True)
                pub = ", ".join(f"{k} {v}" for k, v in PUBLISHED["denoise"][sigma].items())
                lines.append(
                    f"| denoise | sigma {sigma} | {where} | {s['psnr_input']:.2f} | "
                    f"{'BM3D ' + format(base, '.2f') if base else '-'} | **{s['psnr']:.2f}** "
                    f"(SSIM {s['ssim']:.3f}) | {t['psnr']:.2f} ({t['ssim']:.3f}) | {model} | {pub} |"
                )
    for scale in SCALES:
        model = f"sr_x{scale}"
        if model not in runs:
            continue
        for where in (f"set14_x{scale}", f"bsdtest_x{scale}"):
            s, t = score(runs[model], sets[where]), score(runs[model], sets[where], tta=True)
            pub = ", ".join(f"{k} {v}" for k, v in PUBLISHED["sr"][scale].items())
            lines.append(
                f"| super-resolution | x{scale} | {where} | - | bicubic {s['psnr_input']:.2f} | "
                f"**{s['psnr']:.2f}** (SSIM {s['ssim']:.3f}) | {t['psnr']:.2f} ({t['ssim']:.3f}) | {model} | "
                f"{pub} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="*", choices=tuple(RUNS), default=[], help="train these runs")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per run")
    parser.add_argument("--threads", type=int, help="torch threads per run (1 to share 2 cores by 2 runs)")
    parser.add_argument("--table", action="store_true", help="score the finished runs and print the table")
    args = parser.parse_args()
    for name in args.runs:
        train(name, args.minutes, args.threads)
    if args.table or not args.runs:
        print(table())


if __name__ == "__main__":
    main()
