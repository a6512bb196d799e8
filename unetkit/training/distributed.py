"""Data-parallel training and sharded prediction on torch.distributed, as launched by ``torchrun``.

A process knows it is one of several from the variables ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); ``unetkit train ... --nproc N``
and ``unetkit predict ... --nproc N`` start the same thing through :func:`launch`, which calls
PyTorch's own launcher (``torch.distributed.run``) on this machine with a free port.

The rules every rank follows (see ``docs/distributed.md``):

* backend NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU; the process
  group has an explicit timeout (:data:`TIMEOUT_ENV`, default :data:`DEFAULT_TIMEOUT_S`);
* only rank 0 writes (the RUN folder, logs, progress bar, checkpoints) and validates;
* every decision that ends a loop (time budget, Ctrl-C, a diverged loss, early stopping, the best
  epoch) is made on rank 0, or from a value all ranks reduced together, and then shared, so that
  every rank runs the same collectives in the same order and stops at the same step.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

#: Environment variable: the process-group timeout in seconds (how long a rank waits for the others).
TIMEOUT_ENV = "UNETKIT_DIST_TIMEOUT"
#: The default process-group timeout: rank 0 validates while the others wait, so it must cover a
#: validation and a checkpoint save.
DEFAULT_TIMEOUT_S = 1800
#: Environment variable: the backend (``gloo`` or ``nccl``) instead of the automatic choice.
BACKEND_ENV = "UNETKIT_DIST_BACKEND"
#: On CUDA, batch norm becomes SyncBatchNorm when a process's batch is smaller than this: below
#: about 8 samples the per-process batch statistics are too noisy to normalise with.
SYNC_BN_BELOW = 8
#: Sharded prediction waits at its final gather for the slowest process; a dead process is still
#: noticed at once (its connection closes, and ``torchrun`` stops the others).
PREDICT_TIMEOUT_S = 7 * 24 * 3600

T = TypeVar("T")


class DistributedError(RuntimeError):
    """Another process of the job stopped or did not answer within the process-group timeout."""


def launched_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the variables ``torchrun`` sets (``(0, 1, 0)`` without)."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only process): the one that prints and writes."""
    return launched_world()[0] == 0


def is_elastic_restart() -> bool:
    """Whether ``torchrun --max-restarts K`` started this process again after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def add_nproc_option(parser: Any, what: str) -> None:
    """The ``--nproc N`` option of ``train`` and ``predict``."""
    parser.add_argument(
        "--nproc", type=int, metavar="N",
        help=f"{what} in N processes on this machine, started by PyTorch's torchrun engine (one per GPU "
        "on CUDA; gloo on the CPU); the same as `torchrun --standalone --nproc-per-node N -m unetkit ...`",
    )


def timeout_seconds(default: float = DEFAULT_TIMEOUT_S) -> float:
    """The process-group timeout: :data:`TIMEOUT_ENV` if set, else ``default``."""
    value = os.environ.get(TIMEOUT_ENV)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be positive, got {value!r}")
    return seconds


def process_device(device: torch.device, local_rank: int, world_size: int) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for CUDA (one GPU per process), else ``device``.

    Raises ``ValueError`` for more processes on this machine than GPUs, or one GPU named for all."""
    if device.type != "cuda":
        return device
    if device.index is not None and world_size > 1:
        raise ValueError(
            f"device {device} names one GPU, but each of the {world_size} processes uses its own "
            "(cuda:LOCAL_RANK): give --device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose GPUs"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(
            f"more processes than GPUs on this machine: process LOCAL_RANK={local_rank} has no GPU "
            f"(PyTorch sees {count}); start at most {count} processes per machine (--nproc-per-node)"
        )
    return torch.device("cuda", local_rank)


def choose_backend(device: torch.device) -> str:
    """``nccl`` for CUDA, ``gloo`` for the CPU, or :data:`BACKEND_ENV`; raises ``ValueError`` for NCCL
    without CUDA or an unknown backend."""
    backend = os.environ.get(BACKEND_ENV) or ("nccl" if device.type == "cuda" else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"{BACKEND_ENV} must be gloo or nccl, got {backend!r}")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(
            "the NCCL backend runs on CUDA GPUs only, and this run trains on the CPU: "
            f"use gloo (unset {BACKEND_ENV}) or --device cuda on a machine with GPUs"
        )
    return backend


@dataclass
class Distributed:
    """This process's place in the job and the few collectives the trainer needs.

    With ``world_size == 1`` every method returns its input without communicating, so the
    single-process trainer runs exactly as before. ``owns_group``: this object started the process
    group and :meth:`close` ends it; ``timeout_s``: the process group's timeout.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None
    owns_group: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def _run(self, what: str, collective: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a collective; a peer that died or a timeout becomes a :class:`DistributedError`."""
        try:
            return collective(*args, **kwargs)
        except RuntimeError as exc:
            raise DistributedError(
                f"rank {self.rank}: {what} failed because another process of the job stopped or did not "
                f"answer within {self.timeout_s:.0f} s ({TIMEOUT_ENV}); the RUN folder keeps the last "
                f"committed checkpoint (continue with --resume). Cause: {exc}"
            ) from exc

    def agree_step(
        self, loss: torch.Tensor, stop: bool, out_of_time: bool, clock: float
    ) -> tuple[torch.Tensor, bool, bool, float]:
        """After a step: the loss summed over the ranks, and rank 0's stop request, time verdict and
        clock (training seconds), the same on every rank (one all-reduce)."""
        if not self.enabled:
            return loss, stop, out_of_time, clock
        main = 1.0 if self.is_main else 0.0
        flags = [main * stop, main * out_of_time, main * clock]
        values = torch.tensor([loss.detach().float().item(), *flags], dtype=torch.float64)
        values = values.to(self._comm_device)
        self._run("agreeing on the step", dist.all_reduce, values)
        loss_sum, stop_v, time_v, clock_v = values.tolist()
        summed = torch.tensor(loss_sum, dtype=loss.dtype, device=loss.device)
        return summed, bool(stop_v), bool(time_v), clock_v

    def from_main(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box = [value]
        self._run(
            "sharing rank 0's decision", dist.broadcast_object_list, box, src=0, device=self._comm_device
        )
        return box[0]

    def gather_to_main(self, value: T) -> Optional[list[T]]:
        """Every rank's ``value`` on rank 0, in rank order (``None`` on the other ranks)."""
        if not self.enabled:
            return [value]
        gathered: Optional[list[Any]] = [None] * self.world_size if self.is_main else None
        self._run("gathering the results", dist.gather_object, value, gathered, dst=0)
        return gathered

    def barrier(self, what: str) -> None:
        """Wait until every rank is here (``what``: for the error message)."""
        if self.enabled:
            self._run(what, dist.barrier)

    def close(self) -> None:
        """End the process group if this object started it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup_distributed(device: torch.device, *, timeout_s: Optional[float] = None) -> Distributed:
    """This process's :class:`Distributed` (one process without ``torchrun``), with the process group
    started (or the one already started by the caller reused) and the process's device."""
    rank, world, local = launched_world()
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if world <= 1:
        return Distributed(device=device)
    device = process_device(device, local, world)
    seconds = timeout_seconds() if timeout_s is None else timeout_s
    if dist.is_initialized():
        return Distributed(rank, world, local, device, dist.get_backend(), False, seconds)
    backend = choose_backend(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=seconds)
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt:
        # torchrun's store outlives a failed attempt: its keys (the old ranks' addresses) would be read
        # by the new processes, so each attempt starts its group under its own prefix.
        store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=timeout))
        store = dist.PrefixStore(f"unetkit/attempt_{attempt}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    else:
        dist.init_process_group(backend, timeout=timeout)
    return Distributed(rank, world, local, device, backend, True, seconds)


def use_sync_batch_norm(device: torch.device, world_size: int, batch_size: int) -> bool:
    """Whether batch norm becomes SyncBatchNorm: on CUDA with several processes and a per-process
    batch below :data:`SYNC_BN_BELOW` (SyncBatchNorm does not run on CPU tensors)."""
    return device.type == "cuda" and world_size > 1 and batch_size < SYNC_BN_BELOW


def has_batch_norm(model: torch.nn.Module) -> bool:
    """Whether ``model`` has batch-norm layers (whose statistics depend on the per-process batch)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def rank_batches(order: torch.Tensor, batch_size: int, rank: int, world_size: int) -> list[int]:
    """This rank's items of ``order`` for global batches of ``batch_size * world_size``: global batch
    ``k`` is ``order[k*B*W : (k+1)*B*W]`` and rank ``r`` takes its ``r``-th slice of ``B`` (an
    incomplete last global batch is dropped). With ``W == 1`` this is ``order`` cut to whole batches,
    and W processes with batch B see the same patches per step as one process with batch B*W."""
    per_step = batch_size * world_size
    steps = len(order) // per_step
    grid = order[: steps * per_step].view(steps, world_size, batch_size)
    return grid[:, rank].reshape(-1).tolist()


def shard_files(files: Sequence[Path], rank: int, world_size: int) -> list[Path]:
    """This rank's share of ``files`` (each file on exactly one rank, in the input order).

    Files are dealt largest first to the rank with the fewest bytes so far (ties: fewest files, then
    lowest rank), so a big image is one process's work and the shares take about the same time; the
    same on every rank.
    """
    if world_size <= 1:
        return list(files)

    def size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    loads = [0] * world_size
    counts = [0] * world_size
    owner = {}
    for index in sorted(range(len(files)), key=lambda i: (-size(files[i]), i)):
        target = min(range(world_size), key=lambda r: (loads[r], counts[r], r))
        owner[index] = target
        loads[target] += size(files[index])
        counts[target] += 1
    return [f for i, f in enumerate(files) if owner[i] == rank]


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each launched process is given)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run ``python -m unetkit ARGV`` in ``nproc`` processes on this machine through
    ``torch.distributed.run`` (torchrun's engine, standalone rendezvous on a free port); returns the
    exit code: 0, a failed process's own (smallest) exit code, or 1 when one was killed by a signal,
    with a message naming the failed processes."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if launched_world()[1] > 1:
        raise ValueError(
            "--nproc starts the processes itself; this process already runs under torchrun "
            f"(WORLD_SIZE={launched_world()[1]}): leave --nproc out"
        )
    if nproc < 1:
        raise ValueError(f"--nproc must be 1 or more, got {nproc}")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", "unetkit", *strip_nproc(argv)])
    try:
        run(args)
    except ChildFailedError as exc:
        lines = [
            f"rank {rank} (pid {f.pid}): "
            + (f"killed by signal {f.signal_name()}" if f.exitcode < 0 else f"exit code {f.exitcode}")
            for rank, f in sorted(exc.failures.items())
        ]
        print(
            f"error: the {nproc}-process job failed ({'; '.join(lines)}; the launcher stops the other "
            "processes when one fails). A training RUN folder keeps its last committed checkpoint: "
            "continue with --resume.",
            file=sys.stderr,
        )
        codes = [f.exitcode for f in exc.failures.values() if f.exitcode > 0]
        return min(codes) if codes else 1
    except SignalException as exc:
        print(f"stopped by signal {exc.sigval.name}", file=sys.stderr)
        return 130
    return 0
