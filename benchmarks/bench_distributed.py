"""Data-parallel training on ISBI 2012: 1 process x 2 threads against 2 processes x 1 thread, and the
communication per step of the default networks with an on-paper scaling estimate to 8 GPUs.

    flock /tmp/unetkit-heavy.lock python benchmarks/bench_distributed.py --minutes 20
    python benchmarks/bench_distributed.py --comm-only

Both runs are the default plan (``unetkit train TRAIN --val VAL --max-minutes N``, the split of
``bench_train_isbi.py``: sections 00-19 train, 20-24 validate), one after the other:
``--threads 2`` in one process, then ``--threads 1 --nproc 2`` (gloo). On a 2-core machine both use
the same cores: the comparison is intra-op threads against processes, the latter paying for the
gradient all-reduce, the per-step agreement and rank 0 validating alone. Each run plans on its own
(the plan measures the machine), so the patches per epoch may differ; steps/s x global batch =
patches/s is the comparable speed.

Communication: DDP all-reduces every gradient once per optimiser step, in float32 whatever the
autocast dtype. The bytes are measured with a DDP communication hook (the sizes of the buckets it is
handed, one training step of a one-process gloo group) and checked against parameters x 4 bytes.
The scaling estimate is a ring all-reduce (each GPU sends and receives ``2 (N-1)/N x bytes``) at an
assumed bus bandwidth, against an assumed compute time per step (``--gpu-step-ms``), without
overlap of communication and the backward pass (DDP does overlap: the estimate is a lower bound
on the efficiency).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_isbi import make_split  # noqa: E402

UNETKIT = [sys.executable, "-m", "unetkit"]
SETUPS = {"1x2": ["--threads", "2"], "2x1": ["--threads", "1", "--nproc", "2"]}
#: Bus bandwidths (GB/s) of the estimate: PCIe 4.0 x16 in practice, and NVLink (A100/H100 class).
BANDWIDTHS = {"PCIe ~20 GB/s": 20e9, "NVLink ~150 GB/s": 150e9}


def train(name: str, minutes: float, work: Path) -> dict:
    """Train the default plan in the ``name`` set-up; returns its row of the table."""
    train_dir, val_dir = make_split(work / "split")
    run = work / f"run-{name}"
    command = [*UNETKIT, "train", str(train_dir), "--val", str(val_dir), "--out", str(run),
               "--max-minutes", str(minutes), "--no-progress", *SETUPS[name]]
    started = time.time()
    subprocess.run(command, check=True)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    config = json.loads((run / "config.json").read_text())
    world = 2 if "--nproc" in SETUPS[name] else 1
    last = rows[-1]
    val_s = sum(float(r.get("val_s") or 0) for r in rows)
    train_s = float(last["elapsed_s"]) - val_s
    return {
        "setup": name, "wall_s": time.time() - started, "epochs": len(rows), "steps": int(last["step"]),
        "global_batch": config["data"]["batch_size"] * world,
        "steps_per_s": int(last["step"]) / train_s,
        "patches_per_s": int(last["step"]) * config["data"]["batch_size"] * world / train_s,
        "val_share": val_s / float(last["elapsed_s"]),
        "best_dice": max(float(r["dice"]) for r in rows if r.get("dice")),
    }


def allreduced_bytes(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Bytes DDP hands to all-reduce in one training step (a communication hook counts the buckets)."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel

    seen: list[int] = []

    def counting_hook(state, bucket):  # unannotated: DDP checks the annotations, which are strings here
        seen.append(bucket.buffer().numel() * bucket.buffer().element_size())
        return default_hooks.allreduce_hook(None, bucket)

    with tempfile.NamedTemporaryFile() as store:
        dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
        try:
            ddp = DistributedDataParallel(model)
            ddp.register_comm_hook(None, counting_hook)
            ddp(torch.randn(shape)).float().mean().backward()
        finally:
            dist.destroy_process_group()
    return sum(seen)


def default_networks(work: Path) -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    """The network of the ISBI default plan (from the 1x2 run, or planned now) and of ``TrainConfig()``."""
    from unetkit.config import TrainConfig, load_config
    from unetkit.models import build_model
    from unetkit.training.planner import plan_training

    run = work / "run-1x2" / "config.json"
    if run.is_file():
        isbi = load_config(run)
    else:
        train_dir, val_dir = make_split(work / "split")
        isbi = plan_training(str(train_dir), val_dir=str(val_dir), measure=False).config
    nets = {}
    for name, config in (("ISBI default plan", isbi), ("TrainConfig() default", TrainConfig())):
        model = config.model
        patch = config.data.patch_size
        nets[name] = (build_model(model), (2, model.in_channels, patch, patch))
    return nets


def communication_table(work: Path, gpu_step_ms: float) -> str:
    lines = ["| network | parameters | params x 4 B | all-reduced per step (hook) |", "|---|---|---|---|"]
    estimates = []
    for name, (model, shape) in default_networks(work).items():
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        measured = allreduced_bytes(model, shape)
        lines.append(f"| {name} | {params:,} | {params * 4 / 1e6:.2f} MB | {measured / 1e6:.2f} MB |")
        estimates.append((name, measured))
    lines += ["", f"On paper (ring all-reduce, no overlap, {gpu_step_ms:g} ms of compute per step):", "",
              "| network | GPUs | sent per GPU per step | " + " | ".join(
                  f"comm / efficiency at {b}" for b in BANDWIDTHS) + " |",
              "|---|---|---|" + "---|" * len(BANDWIDTHS)]
    for name, size in estimates:
        for n in (1, 2, 4, 8):
            sent = 2 * (n - 1) / n * size
            cells = []
            for bandwidth in BANDWIDTHS.values():
                comm_ms = sent / bandwidth * 1e3
                cells.append(f"{comm_ms:.2f} ms / {gpu_step_ms / (gpu_step_ms + comm_ms):.1%}")
            lines.append(f"| {name} | {n} | {sent / 1e6:.2f} MB | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of each run")
    parser.add_argument("--work", default="/tmp/unetkit-bench/distributed")
    parser.add_argument("--comm-only", action="store_true", help="only the communication table")
    parser.add_argument("--gpu-step-ms", type=float, default=50.0,
                        help="assumed compute time of one step on one GPU, for the estimate")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.comm_only:
        rows = [train(name, args.minutes, work) for name in SETUPS]
        (work / "results.json").write_text(json.dumps(rows, indent=2))
        print(f"\nISBI default plan, {args.minutes:g} min each, one after the other on this machine:\n")
        print("| set-up | epochs | steps | global batch | steps/s | patches/s | validation share "
              "| best Dice |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['setup']} | {r['epochs']} | {r['steps']} | {r['global_batch']} "
                  f"| {r['steps_per_s']:.3f} | {r['patches_per_s']:.2f} | {r['val_share']:.1%} "
                  f"| {r['best_dice']:.4f} |")
    print()
    print(communication_table(work, args.gpu_step_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
