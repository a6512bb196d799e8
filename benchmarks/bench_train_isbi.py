"""ISBI 2012 (the U-Net paper's data): train within a time budget, score on held-out sections.

Sections 00-19 train, 20-24 validate (contiguous blocks: neighbouring sections are correlated).
The split is two folders of symlinks under the work folder; nothing is copied.

    flock /tmp/unetkit-heavy.lock python benchmarks/bench_train_isbi.py --model default --minutes 20
    flock /tmp/unetkit-heavy.lock python benchmarks/bench_train_isbi.py --model noskip --minutes 20
    flock /tmp/unetkit-heavy.lock python benchmarks/bench_train_isbi.py --model monai --minutes 20
    python benchmarks/bench_train_isbi.py --table

``default`` is exactly what a user types: ``unetkit train TRAIN --val VAL --out RUN --max-minutes 20``.
``noskip`` adds ``--model.architecture encoder_decoder`` (the same plan without skip connections).
``monai`` trains MONAI's ``BasicUNet`` with unetkit's trainer and the default run's config, so the
only difference is the network. Each run is then scored with ``unetkit evaluate RUN VAL``, and again
with ``--tta`` (flips and 90-degree rotations averaged, as the paper averaged rotated inputs).

``--threads N`` trains with N torch threads into ``run-<model>-t<N>``: three such runs started
together (``--threads 1`` each, on a 2-core machine) share the machine equally, so the comparison
table is one run under the same conditions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from unetkit.models import ModelConfig
from unetkit.models.sizes import SizeRules

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isbi2012"
MODELS = ("default", "noskip", "monai")
UNETKIT = [sys.executable, "-m", "unetkit"]


def make_split(work: Path, data: Path = DATA, val_names: range = range(20, 25)) -> tuple[Path, Path]:
    """``work/train`` and ``work/val`` dataset folders of symlinks into ``data``."""
    val_stems = {f"{i:02d}" for i in val_names}
    for part in ("train", "val"):
        for sub in ("images", "masks"):
            (work / part / sub).mkdir(parents=True, exist_ok=True)
    for image in sorted((data / "images").glob("*.png")):
        part = "val" if image.stem in val_stems else "train"
        for sub in ("images", "masks"):
            link = work / part / sub / image.name
            if not link.exists():
                link.symlink_to(data / sub / image.name)
    return work / "train", work / "val"


class MonaiBasicUNet(nn.Module, SizeRules):
    """MONAI ``BasicUNet`` with the size rules unetkit's trainer and predictor use (sizes divisible by 16)."""

    def __init__(self, in_channels: int, num_classes: int, base: int) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet

        features = (base, base, 2 * base, 4 * base, 8 * base, base)
        self.net = BasicUNet(
            spatial_dims=2, in_channels=in_channels, out_channels=num_classes, features=features
        )
        self.config = ModelConfig(
            architecture="monai_basicunet",
            in_channels=in_channels,
            num_classes=num_classes,
            depth=4,
            base_channels=base,
            padding="same",
            norm="instance",
        )

    @property
    def spatial_dims(self) -> int:
        return 2

    def axis_output_size(self, size: int) -> Optional[int]:
        return size if size > 0 and size % 16 == 0 else None

    def axis_min_input(self) -> int:
        return 16

    def size_rule(self) -> str:
        return "MONAI BasicUNet needs sizes divisible by 16."

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_monai(
    train_dir: Path, val_dir: Path, run: Path, default_run: Path, minutes: float, threads: Optional[int]
) -> None:
    from unetkit.config import apply_overrides, load_config
    from unetkit.training import train

    config = load_config(default_run / "config.json")
    config = apply_overrides(
        config,
        {
            "out": str(run),
            "budget.max_minutes": minutes,
            "data.train": str(train_dir),
            "data.val": str(val_dir),
            "threads": threads,
        },
    )
    model = MonaiBasicUNet(config.model.in_channels, config.model.num_classes, config.model.base_channels)
    train(config, model=model, progress_bar=False)


def evaluate_in_process(
    run: Path, val_dir: Path, out: Path, model: Optional[nn.Module] = None, tta: bool = False
) -> dict:
    """Score a run whose network cannot be rebuilt from ``model.json`` (the MONAI one)."""
    from safetensors.torch import load_file

    from unetkit.data.samples import find_samples, load_sample
    from unetkit.inference import Predictor
    from unetkit.training import Run
    from unetkit.training.evaluation import score_images, write_report

    info = Run.load(run)
    model.load_state_dict(load_file(str(run / "model.safetensors")))
    predictor = Predictor(model.eval(), classes=info.classes, tta=tta)
    items = [
        (s.name, *load_sample(s, info.classes, info.config.data.normalize)) for s in find_samples(val_dir)
    ]
    scored = score_images(predictor, items, info.classes)
    return write_report(out, scored, info.classes, title=f"MONAI BasicUNet on {val_dir}")


def tagged(name: str, threads: Optional[int]) -> str:
    return f"{name}-t{threads}" if threads else name


def run_model(name: str, minutes: float, work: Path, threads: Optional[int] = None) -> dict:
    """Train ``name`` on the split within ``minutes``, then score it (see :func:`collect`)."""
    train_dir, val_dir = make_split(work / "split")
    run = work / f"run-{tagged(name, threads)}"
    if run.exists():
        raise SystemExit(f"{run} exists; remove it to re-run, or --collect it")
    started = time.time()
    if name == "monai":
        train_monai(train_dir, val_dir, run, work / "run-default", minutes, threads)
    else:
        cmd = [*UNETKIT, "train", str(train_dir), "--val", str(val_dir), "--out", str(run)]
        cmd += ["--max-minutes", f"{minutes:g}", "--no-progress"]
        if threads:
            cmd += ["--threads", str(threads)]
        if name == "noskip":
            cmd += ["--model.architecture", "encoder_decoder"]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return collect(name, minutes, work, time.time() - started, threads)


def score(name: str, run: Path, val_dir: Path, tta: bool) -> dict:
    out = run / ("eval-tta" if tta else "eval")
    if name == "monai":
        return evaluate_in_process(run, val_dir, out, _load_any(run, name), tta=tta)
    cmd = [*UNETKIT, "evaluate", str(run), str(val_dir), "--out", str(out)] + (["--tta"] if tta else [])
    subprocess.run(cmd, check=True)
    return json.loads((out / "summary.json").read_text())


def collect(
    name: str, minutes: float, work: Path, wall: Optional[float] = None, threads: Optional[int] = None
) -> dict:
    """Score a finished run on the validation sections and write ``work/result-<name>[-t<N>].json``."""
    from unetkit.training.reporting import read_csv

    run = work / f"run-{tagged(name, threads)}"
    val_dir = work / "split" / "val"
    summary = score(name, run, val_dir, tta=False)
    with_tta = score(name, run, val_dir, tta=True)
    history = read_csv(run / "metrics.csv")
    previous = work / f"result-{tagged(name, threads)}.json"
    if wall is None and previous.is_file():
        wall = json.loads(previous.read_text())["wall_s"]
    result = {
        "model": name,
        "threads": threads,
        "minutes": minutes,
        "wall_s": wall,
        "train_s": history[-1]["elapsed_s"],
        "epochs": len(history),
        "steps": history[-1]["step"],
        "batches_per_s": sum(h["batches_per_s"] for h in history) / len(history),
        "params": sum(p.numel() for p in _load_any(run, name).parameters()),
        **{k: summary[k] for k in ("pixel_error", "isbi_pixel_error", "isbi_pixel_threshold", "rand_error",
                                   "rand_error_best", "rand_threshold", "dice", "iou", "hd95")},
        **{f"{k}_tta": with_tta[k] for k in ("pixel_error", "isbi_pixel_error", "rand_error",
                                             "rand_error_best", "rand_threshold")},
    }
    (work / f"result-{tagged(name, threads)}.json").write_text(json.dumps(result, indent=2))
    return result


def _load_any(run: Path, name: str) -> nn.Module:
    cfg = json.loads((run / "model.json").read_text())
    if name == "monai":
        return MonaiBasicUNet(cfg["in_channels"], cfg["num_classes"], cfg["base_channels"])
    from unetkit.checkpoint import load_model

    return load_model(run)


def table(work: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(work.glob("result-*.json"))]
    label = {
        "default": "unetkit U-Net (default plan)",
        "noskip": "no-skip encoder-decoder (same plan)",
        "monai": "MONAI BasicUNet (unetkit trainer, same plan)",
    }
    lines = [
        "| model | threads | params | budget (min) | epochs | steps | batches/s | pixel error "
        "| ISBI pixel error (1 - max F, threshold) | Rand error (0.5) "
        "| Rand error (ISBI protocol, threshold) | Dice | IoU | HD95 (px) "
        "| with TTA: pixel error | with TTA: ISBI pixel error "
        "| with TTA: Rand error (ISBI protocol, threshold) |",
        "|---" * 17 + "|",
    ]
    for r in rows:
        lines.append(
            f"| {label[r['model']]} | {r.get('threads') or 'all'} | {r['params']:,} | {r['minutes']:g} "
            f"| {r['epochs']} | {r['steps']} | "
            f"{r['batches_per_s']:.2f} | {r['pixel_error']:.4f} | "
            f"{r['isbi_pixel_error']:.4f} ({r['isbi_pixel_threshold']:g}) | "
            f"{r['rand_error']:.4f} | "
            f"{r['rand_error_best']:.4f} ({r['rand_threshold']:g}) | {r['dice']:.4f} | {r['iou']:.4f} | "
            f"{r['hd95']:.2f} | {r['pixel_error_tta']:.4f} | {r['isbi_pixel_error_tta']:.4f} | "
            f"{r['rand_error_best_tta']:.4f} ({r['rand_threshold_tta']:g}) |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=MODELS)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--work", default="/tmp/unetkit-bench/isbi")
    parser.add_argument("--table", action="store_true", help="print the table of the finished runs")
    parser.add_argument("--collect", action="store_true", help="score an existing run of --model again")
    parser.add_argument("--threads", type=int, help="torch threads per run (runs sharing the machine)")
    args = parser.parse_args()
    work = Path(args.work)
    if args.model:
        run = collect if args.collect else run_model
        result = run(args.model, args.minutes, work, threads=args.threads)
        print(json.dumps(result, indent=2))
    if args.table or not args.model:
        print(table(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
