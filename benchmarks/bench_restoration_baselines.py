"""Classical restoration baselines on the standard sets, with unetkit's degradations and scores.

Measures, on this machine:

1. Gaussian denoising on Set12 at each sigma (0-255 scale; pairs from ``restoration_sets.noisy_pairs``
   under ``OUT/set12_sigma{S}/``): mean PSNR (data range 255) and SSIM of the noisy input (float, not
   clipped) and of BM3D (the ``bm3d`` package, profile default, on the noisy image scaled to 0-1, its
   output scaled back and rounded/clipped to uint8 as the literature saves results) against the clean
   image, and BM3D's seconds per image;
2. bicubic super-resolution on Set14 at each scale (pairs from ``restoration_sets.sr_pairs`` under
   ``OUT/set14_x{S}/``): PSNR and SSIM of ``upscale`` of the uint8 LR input, rounded/clipped to uint8,
   against the HR target on the Y channel with ``scale`` border pixels cropped.

Prints a markdown table and writes ``OUT/baselines.json`` (means and per-image scores). Needs the bench
extra (``pip install -e .[bench]``) for BM3D. Run from the repository root with::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_restoration_baselines.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from restoration_sets import noisy_pairs, read_uint8, sr_pairs, to_uint8  # noqa: E402

from unetkit.data.degrade import upscale  # noqa: E402
from unetkit.data.io import list_images, read_image  # noqa: E402
from unetkit.restoration_metrics import restoration_scores  # noqa: E402
from unetkit.utils.atomic import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "restoration"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# The shared data README's figures, measured with Pillow's bicubic: (task, level, method) -> PSNR (dB).
README_PSNR = {("denoise", 25, "noisy input"): 20.17, ("sr", 2, "bicubic"): 30.32,
               ("sr", 3, "bicubic"): 27.63, ("sr", 4, "bicubic"): 26.09}


def limit_threads(threads: int) -> None:
    """Re-run this script with the BLAS/OpenMP thread variables set, unless they already are
    (they only take effect before numpy is loaded)."""
    want = str(threads)
    if any(os.environ.get(v) != want for v in THREAD_VARS):
        os.environ.update({v: want for v in THREAD_VARS})
        os.execv(sys.executable, [sys.executable, *sys.argv])


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def bm3d_denoise(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (profile default) of a ``(C, H, W)`` 0-255 image, channel by channel; float 0-255 out."""
    import bm3d

    return np.stack([bm3d.bm3d(c.astype(np.float64) / 255.0, sigma_psd=sigma / 255.0) * 255.0 for c in noisy])


def denoising(sigma: float, out: Path, run_bm3d: bool, clean: Path, name: str) -> dict[str, Any]:
    """Noisy-input and BM3D scores on the clean images ``clean`` (pairs ``out/<name>_sigma<S>``) at
    ``sigma``, per image and mean."""
    root = noisy_pairs(clean, out / f"{name}_sigma{sigma:g}", sigma)
    per_image = []
    for target in list_images(root / "targets"):
        clean = read_uint8(target)
        noisy = read_image(root / "inputs" / f"{target.stem}.tif")
        row: dict[str, Any] = {"image": target.stem,
                               **{f"noisy_{k}": v for k, v in restoration_scores(noisy, clean).items()}}
        if run_bm3d:
            start = time.perf_counter()
            denoised = bm3d_denoise(noisy, sigma)
            row["bm3d_seconds"] = time.perf_counter() - start
            row.update({f"bm3d_{k}": v for k, v in restoration_scores(to_uint8(denoised), clean).items()})
            row["bm3d_psnr_float"] = restoration_scores(denoised, clean)["psnr"]
        print(f"  sigma {sigma:g} {target.stem}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k != "image"), flush=True)
        per_image.append(row)
    keys = [k for k in per_image[0] if k != "image"]
    return {"sigma": sigma, "pairs": str(root), "mean": {k: _mean(per_image, k) for k in keys},
            "per_image": per_image}


def super_resolution(scale: int, out: Path, hr: Path, name: str) -> dict[str, Any]:
    """Bicubic scores on the images ``hr`` (pairs ``out/<name>_x<S>``) at ``scale`` (Y channel,
    ``scale`` border pixels cropped)."""
    root = sr_pairs(hr, out / f"{name}_x{scale}", scale)
    per_image = []
    for target in list_images(root / "targets"):
        hr = read_uint8(target)
        up = to_uint8(upscale(read_uint8(root / "inputs" / target.name), scale))
        scores = restoration_scores(up, hr, border=scale, y_channel=True)
        per_image.append({"image": target.stem, **{f"bicubic_{k}": v for k, v in scores.items()}})
    keys = [k for k in per_image[0] if k != "image"]
    return {"scale": scale, "pairs": str(root), "mean": {k: _mean(per_image, k) for k in keys},
            "per_image": per_image}


def table(
    denoise: list[dict[str, Any]], sr: list[dict[str, Any]], names: tuple[str, str] = ("Set12", "Set14")
) -> str:
    lines = ["| task | set | level | method | PSNR (dB) | SSIM | s / image | README PSNR |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]

    def ref(key: tuple[str, float, str]) -> str:
        return f"{README_PSNR[key]:.2f}" if key in README_PSNR else ""

    for d in denoise:
        m, s = d["mean"], d["sigma"]
        lines.append(f"| denoise | {names[0]} | sigma {s:g} | noisy input | {m['noisy_psnr']:.2f} | "
                     f"{m['noisy_ssim']:.4f} | | {ref(('denoise', s, 'noisy input'))} |")
        if "bm3d_psnr" in m:
            lines.append(f"| denoise | {names[0]} | sigma {s:g} | BM3D | {m['bm3d_psnr']:.2f} | "
                         f"{m['bm3d_ssim']:.4f} | {m['bm3d_seconds']:.1f} | |")
    for r in sr:
        m, s = r["mean"], r["scale"]
        lines.append(f"| SR (Y, border {s}) | {names[1]} | x{s} | bicubic | {m['bicubic_psnr']:.2f} | "
                     f"{m['bicubic_ssim']:.4f} | | {ref(('sr', s, 'bicubic'))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[15, 25, 50], help="noise sigmas (0-255)")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4], help="super-resolution scales")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (BM3D itself is serial)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/restoration"))
    parser.add_argument("--no-bm3d", action="store_true", help="skip BM3D (noisy-input scores only)")
    parser.add_argument("--held-out", action="store_true",
                        help="score the held-out BSD400 images (bench_restoration.py's bsd_test) instead of "
                        "Set12/Set14; writes baselines_bsdtest.json")
    args = parser.parse_args()
    limit_threads(args.threads)

    start = time.perf_counter()
    if args.held_out:
        test = args.out / "data" / "bsd_test"
        sets, json_name = ((test, "bsdtest"), (test, "bsdtest")), "baselines_bsdtest.json"
    else:
        sets, json_name = ((DATA / "set12", "set12"), (DATA / "set14", "set14")), "baselines.json"
    sr = [super_resolution(s, args.out, *sets[1]) for s in args.scales]
    denoise = [denoising(s, args.out, not args.no_bm3d, *sets[0]) for s in args.sigmas]
    elapsed = time.perf_counter() - start

    readme = {f"{task}/{level}/{method}": v for (task, level, method), v in README_PSNR.items()}
    result = {"threads": args.threads, "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "seconds": elapsed, "readme_psnr": readme, "denoising": denoise, "super_resolution": sr}
    atomic_write_json(args.out / json_name, result)
    print(f"\n{args.threads} thread(s), {os.cpu_count()} CPUs, {elapsed:.0f} s in all; "
          f"written {args.out / json_name}\n")
    print(table(denoise, sr, (sets[0][1], sets[1][1])))


if __name__ == "__main__":
    main()
