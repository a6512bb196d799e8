"""dsb2018 (nuclei, mixed modalities) and CamVid (11 classes, void ignored): the default plan end to end.

Each dataset is split into two folders of symlinks under the work folder (nothing is copied):
dsb2018 holds out 40 images (a seeded draw), CamVid keeps its own train/val split (90/25). Then,
exactly as a user would:

    unetkit train TRAIN --val VAL --out RUN --max-minutes 20
    unetkit evaluate RUN VAL --out RUN/eval

A RUN folder that already holds a finished run of the command is scored without training again.

    flock /tmp/unetkit-heavy.lock python benchmarks/bench_train_datasets.py --dataset dsb2018 --minutes 20
    flock /tmp/unetkit-heavy.lock python benchmarks/bench_train_datasets.py --dataset camvid --minutes 20
    python benchmarks/bench_train_datasets.py --table
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
UNETKIT = [sys.executable, "-m", "unetkit"]
DATASETS = ("dsb2018", "camvid")

# CamVid (SegNet version) class names and colours; 11 = void, not scored.
CAMVID_CLASSES = """\
Sky 128 128 128
Building 128 0 0
Pole 192 192 128
Road 128 64 128
Pavement 60 40 222
Tree 128 128 0
SignSymbol 192 128 128
Fence 64 64 128
Car 64 0 128
Pedestrian 64 64 0
Bicyclist 0 128 192
void 0 0 0 ignore
"""


def link_samples(src_root: Path, dst_root: Path, names: list[str], subfolders: tuple[str, ...]) -> Path:
    for sub in subfolders:
        (dst_root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = dst_root / sub / name
            if not link.exists() and (src_root / sub / name).exists():
                link.symlink_to(src_root / sub / name)
    return dst_root


def finished(run: Path) -> bool:
    """Whether ``run`` is a RUN folder whose training has ended (not one still in progress)."""
    from unetkit.training import Run

    return (run / "model.safetensors").is_file() and Run.load(run).status not in ("running", "interrupted")


def split_dsb(work: Path, n_val: int = 40, seed: int = 0) -> tuple[Path, Path]:
    src = DATA / "dsb2018"
    names = sorted(p.name for p in (src / "images").glob("*.png"))
    order = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(set(names) - set(val))
    subs = ("images", "masks", "instances")
    return link_samples(src, work / "train", train, subs), link_samples(src, work / "val", val, subs)


def split_camvid(work: Path) -> tuple[Path, Path]:
    src = DATA / "camvid"
    with open(src / "split.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    parts = {}
    for part in ("train", "val"):
        names = [r["file"] for r in rows if r["split"] == part]
        parts[part] = link_samples(src, work / part, names, ("images", "masks"))
        (parts[part] / "classes.txt").write_text(CAMVID_CLASSES)
    return parts["train"], parts["val"]


def run_dataset(name: str, minutes: float, work: Path, threads: Optional[int] = None) -> dict:
    split = split_dsb if name == "dsb2018" else split_camvid
    train_dir, val_dir = split(work / name / "split")
    run = work / name / "run"
    cmd = [*UNETKIT, "train", str(train_dir), "--val", str(val_dir), "--out", str(run)]
    cmd += ["--max-minutes", f"{minutes:g}", "--no-progress"]
    if threads:
        cmd += ["--threads", str(threads)]
    if finished(run):
        print(f"{run} holds a finished run; scoring it (remove it to train again)", flush=True)
        wall = None
    elif run.exists():
        raise SystemExit(f"{run} holds an unfinished run: `unetkit train --resume {run}`, or remove it")
    else:
        print("$", " ".join(cmd), flush=True)
        started = time.time()
        subprocess.run(cmd, check=True)
        wall = time.time() - started
    subprocess.run([*UNETKIT, "evaluate", str(run), str(val_dir), "--out", str(run / "eval")], check=True)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    from unetkit.training.reporting import read_csv

    history = read_csv(run / "metrics.csv")
    result = {
        "dataset": name,
        "threads": threads,
        "minutes": minutes,
        "wall_s": wall if wall is not None else history[-1]["elapsed_s"],
        "epochs": len(history),
        "steps": history[-1]["step"],
        "batches_per_s": sum(h["batches_per_s"] for h in history) / len(history),
        "n_val": summary["num_images"],
        "model": f"depth {config['model']['depth']}, width {config['model']['base_channels']}",
        "patch": config["data"]["patch_size"],
        "loss": config["loss"]["name"],
        "normalize": config["data"]["normalize"]["mode"],
        "object_diameter": config["data"].get("object_diameter"),
        "dice": summary["dice"],
        "iou": summary["iou"],
        "global_dice": summary["global_dice"],
        "global_iou": summary["global_iou"],
        "pixel_accuracy": summary["global_pixel_accuracy"],
        "iou_per_class": summary["global_iou_per_class"],
    }
    (work / f"result-{name}.json").write_text(json.dumps(result, indent=2))
    return result


def table(work: Path) -> str:
    lines = [
        "| dataset | threads | val images | plan (model, patch, loss, normalisation) | budget (min) | epochs "
        "| steps "
        "| batches/s | Dice (mean over images) | IoU (mean over images) | dataset Dice | dataset (mean) IoU "
        "| pixel accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in DATASETS:
        path = work / f"result-{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        lines.append(
            f"| {name} | {r.get('threads') or 'all'} | {r['n_val']} "
            f"| {r['model']}, {r['patch']} px, {r['loss']}, {r['normalize']}"
            + (f", objects at {r['object_diameter']:g} px" if r.get("object_diameter") else "")
            + " "
            f"| {r['minutes']:g} | {r['epochs']} | {r['steps']} | {r['batches_per_s']:.2f} | {r['dice']:.4f} "
            f"| {r['iou']:.4f} | {r['global_dice']:.4f} | {r['global_iou']:.4f} | {r['pixel_accuracy']:.4f} |"
        )
    camvid = work / "result-camvid.json"
    if camvid.is_file():
        per_class = json.loads(camvid.read_text())["iou_per_class"]
        lines += ["", "CamVid IoU per class (summed over the val split):", "",
                  "| " + " | ".join(per_class) + " |", "|" + "---|" * len(per_class),
                  "| " + " | ".join(f"{v:.3f}" for v in per_class.values()) + " |"]
    return "\n".join(lines)


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--dataset", choices=DATASETS)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--work", default="/tmp/unetkit-bench")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads (runs sharing the machine)")
    args = parser.parse_args()
    work = Path(args.work)
    if args.dataset:
        print(json.dumps(run_dataset(args.dataset, args.minutes, work, args.threads), indent=2))
    if args.table or not args.dataset:
        print(table(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
