"""The training loop: patches in, the best model and a resumable state out.

One epoch = ``patches_per_epoch`` random patches (the data area's :class:`PatchDataset`), then a
validation on whole images with the :class:`~unetkit.inference.Predictor` (tiled when large).
After every epoch the RUN folder is brought up to date (``metrics.csv``, ``curves.png``, the best
model, ``state/``), so a kill loses at most the epoch in progress; Ctrl-C saves and exits cleanly.
Under ``torchrun`` (several processes) the same loop trains data-parallel: see
:mod:`unetkit.training.distributed` for what each rank does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..checkpoint import load_model, save_model
from ..config import TrainConfig, monitor_mode, save_config
from ..precision import autocast, mixed_precision_dtype
from ..tasks import get_task
from ..utils.atomic import atomic_write_json
from .averaging import WeightAverage
from .distributed import Distributed, has_batch_norm, rank_batches, setup_distributed, use_sync_batch_norm
from .reporting import save_curves, write_csv
from .run import CONFIG_FILE, CURVES_FILE, METRICS_FILE, SAMPLES_DIR, Run
from .state import Progress, has_state, load_state, save_state


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the RUN folder keeps the last good checkpoint."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def lr_factor(step: int, progress: float, config: TrainConfig) -> float:
    """Learning-rate multiplier at optimiser ``step`` and run ``progress`` in [0, 1]."""
    schedule = config.schedule
    warm = min(1.0, (step + 1) / schedule.warmup_steps) if schedule.warmup_steps > 0 else 1.0
    progress = min(max(progress, 0.0), 1.0)
    final = schedule.final_lr_fraction
    if schedule.name == "cosine":
        factor = final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))
    elif schedule.name == "poly":
        factor = max((1 - progress) ** schedule.power, final)
    else:
        factor = 1.0
    return warm * factor


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    optim = config.optim
    if optim.name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=optim.lr,
            momentum=optim.momentum,
            weight_decay=optim.weight_decay,
            nesterov=optim.momentum > 0,
        )
    cls = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)


class Trainer:
    """Runs one training; ``Trainer(config).fit()`` returns the :class:`Run`.

    ``resume=True`` continues the run in ``config.out`` from its committed state (same epoch,
    step and learning-rate schedule). ``log`` receives the human-readable messages. ``model``:
    train this network instead of building ``config.model`` (e.g. a peer's network for a
    comparison); it must have the size-rule methods of :mod:`unetkit.models.sizes` and a
    ``config`` (its ``model.json``), and its in/out channels must match the data.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        progress_bar: bool = True,
        log: Callable[[str], None] = print,
        model: Optional[nn.Module] = None,
    ) -> None:
        self.config = config.validate()
        self.custom_model = model
        self.resume = resume
        self.progress_bar = progress_bar
        self.log = log
        self.out = Path(config.out)
        self.device = resolve_device(config.device)
        self.task = get_task(self.config.task)
        self.dist = Distributed(device=self.device)  # the job's processes, known once fit() starts

    # ------------------------------------------------------------------ set-up
    def _prepare_folder(self) -> None:
        """Check the RUN folder on every rank, then (after a barrier, so that no rank sees rank 0's
        first files) let rank 0 create it."""
        if self.resume:
            if not has_state(self.out):
                raise FileNotFoundError(
                    f"{self.out} has no training state to resume: "
                    f"run `unetkit train DATA --out {self.out}` first"
                )
        elif has_state(self.out) or (self.out / CONFIG_FILE).exists():
            raise FileExistsError(
                f"{self.out} already holds a training run: add --resume to continue it, "
                "or choose another --out"
            )
        self.dist.barrier("checking the RUN folder")
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

    def _setup(self) -> None:
        self.dist: Distributed = setup_distributed(self.device)
        self.device = self.dist.device
        # Rank 0's config for all: a plan measured on each rank (speed) may differ between them.
        self.config = self.dist.from_main(self.config)
        if not self.dist.is_main:
            self.log, self.progress_bar = (lambda message: None), False
        self._prepare_folder()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed % 2**32)
        self.data = self.task.prepare_data(self.config)
        for note in self.data.notes:
            self.log(note)
        self.config = self.task.resolve_config(self.config, self.data)
        self.model = (self.custom_model or self.task.build_model(self.config)).to(self.device)
        if self.custom_model is not None:  # config.json then describes the network really trained
            self.config = dataclasses.replace(self.config, model=self.custom_model.config)
        self.sync_batch_norm = use_sync_batch_norm(
            self.device, self.dist.world_size, self.config.data.batch_size
        ) and has_batch_norm(self.model)
        if self.sync_batch_norm:  # same parameters and state-dict keys: the saved model is unchanged
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.config.model.dims == 2:  # faster convolutions on CUDA and on the CPU (oneDNN)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, self.config)
        ema = self.config.optim.ema
        self.average = WeightAverage(self.model, ema) if ema else None
        self.loss_fn = self.task.build_loss(self.config, self.data)
        self.dataset = self.task.build_dataset(self.config, self.data, self.model)
        # Rank 0 alone validates; the other ranks need not hold the images.
        self.val_items = self.task.validation_items(self.config, self.data) if self.dist.is_main else []
        if self.dist.is_main:
            save_config(self.config, self.out / CONFIG_FILE)
            for name, content in self.task.run_files(self.data).items():
                atomic_write_json(self.out / name, content)
        self.progress = (
            load_state(self.out, self.model, self.optimizer, self.average) if self.resume else Progress()
        )
        self._adopt_world_size()
        self.network: nn.Module = self.model
        self._progress_now = 0.0  # the run's progress in [0, 1] (the learning-rate clock), see _set_lr
        if self.dist.enabled:
            # Gradients are averaged by DDP (bucketed all-reduce in the backward pass); rank 0's
            # weights and buffers are broadcast at construction. Every parameter of the U-Nets takes
            # part in every loss, so DDP need not search for unused ones.
            self.network = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False,
            )
            # Dropout and diffusion noise differ per rank (the patches already do, by index).
            torch.manual_seed(self.config.seed * 1_000_003 + self.progress.step * 7_919 + self.dist.rank)
        self.amp_dtype = mixed_precision_dtype(self.device, self.config.precision)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.device.type == "cuda" and self.amp_dtype == torch.float16
        )
        self.tensorboard = self._tensorboard()

    def _adopt_world_size(self) -> None:
        """Record the number of processes; a run resumed on another number keeps its place in the
        learning-rate schedule: optimiser steps are counted in steps of the new global batch."""
        saved, world = self.progress.world_size, self.dist.world_size
        if self.resume and saved != world:
            step = round(self.progress.step * saved / world)
            self.log(
                f"resuming a run of {saved} process(es) on {world}: the global batch changes from "
                f"{saved} x {self.config.data.batch_size} to {world} x {self.config.data.batch_size}; "
                f"step {self.progress.step} counts as step {step} of the new batch"
            )
            self.progress.step = step
        self.progress.world_size = world

    def _tensorboard(self) -> Any:
        if not self.config.tensorboard or not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("tensorboard is not installed (pip install tensorboard); logging to metrics.csv only")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def _loader(self, epoch: int, skip_batches: int = 0) -> DataLoader:
        """This rank's batches of the epoch in a seeded order, without the first ``skip_batches``
        batches of the whole epoch (already trained, counted in batches of ``data.batch_size``).

        All ranks draw the same order; each global step takes ``batch_size x world_size`` patches
        of it, rank ``r`` the ``r``-th slice (:func:`~.distributed.rank_batches`), so the ranks train
        on different patches (a patch's randomness is seeded by its index) and the epoch's patch
        count is split among them.
        """
        cfg = self.config.data
        self.dataset.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        n_batches = len(self.dataset) // cfg.batch_size
        order = torch.randperm(len(self.dataset), generator=generator)[: n_batches * cfg.batch_size]
        mine = rank_batches(order[skip_batches * cfg.batch_size :], cfg.batch_size, self.dist.rank,
                            self.dist.world_size)
        return DataLoader(
            self.dataset,
            batch_size=cfg.batch_size,
            sampler=mine,
            generator=generator,  # the loader's own seed draw must not consume the global (dropout) RNG
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    # ---------------------------------------------------------------- the loop
    @property
    def steps_per_epoch(self) -> int:
        global_batch = self.config.data.batch_size * self.dist.world_size
        return max(1, len(self.dataset) // global_batch // self.config.optim.accumulate)

    def _run_progress(self, elapsed: float) -> float:
        budget = self.config.budget
        total_steps = budget.epochs * self.steps_per_epoch
        progress = self.progress.step / total_steps
        if budget.max_minutes:
            progress = max(progress, elapsed / (budget.max_minutes * 60))
        return progress

    def _set_lr(self, elapsed: float) -> float:
        self._progress_now = min(max(self._run_progress(elapsed), 0.0), 1.0)
        lr = self.config.optim.lr * lr_factor(self.progress.step, self._progress_now, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _lr_clock(self, started: float) -> float:
        """The training seconds the learning rate follows: rank 0's clock as last agreed when
        several processes train (their learning rates must be equal), else this process's."""
        return self._clock if self.dist.enabled else self._elapsed(started)

    def _train_step(self, batch: dict[str, torch.Tensor], update: bool) -> torch.Tensor:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        batch["progress"] = torch.tensor(self._progress_now, device=self.device)
        if batch["image"].dim() == 4:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        # Between two optimiser steps (gradient accumulation) DDP need not all-reduce.
        accumulating = self.dist.enabled and not update
        with self.network.no_sync() if accumulating else contextlib.nullcontext():
            with autocast(self.device, self.amp_dtype):
                loss = self.loss_fn(self.network, batch)
            self.scaler.scale(loss / self.config.optim.accumulate).backward()
        if update:
            clip = self.config.optim.grad_clip
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.average is not None:
                self.average.update(self.model)
        return loss.detach()

    def _check_finite(self, loss: torch.Tensor, epoch: int) -> None:
        if not torch.isfinite(loss):
            self.progress.status = "diverged"
            raise TrainingDiverged(
                f"the training loss became {loss.item()} in epoch {epoch + 1} (step {self.progress.step}); "
                f"training stopped. {self.out} keeps the last good checkpoint (epoch {self.progress.epoch}). "
                "Lower the learning rate (--optim.lr), keep gradient clipping on (--optim.grad-clip 12), "
                "or check the images for NaN values."
            )

    def _time_left(self, started: float, reserve: float) -> bool:
        budget = self.config.budget.max_minutes
        if not budget:
            return True
        return self._elapsed(started) + reserve < budget * 60

    def _elapsed(self, started: float) -> float:
        """Training seconds over every session of this run (``started``: this session's start)."""
        return self._elapsed_before + (time.perf_counter() - started)

    def _train_epoch(self, epoch: int, started: float, val_seconds: float) -> tuple[float, int, bool]:
        """One epoch (or the rest of one cut short by Ctrl-C); returns (mean loss, batches, ran to the end).

        Ctrl-C is deferred to the end of the current optimiser step (a second Ctrl-C stops at once);
        the batches trained so far are recorded in the progress, so that ``--resume`` continues this
        epoch with the next batch of the same seeded order, exactly as if never interrupted.

        With several processes, batches are counted over all ranks (one step adds ``world_size``
        batches) and the loss is the sum over ranks; after each step the ranks agree on the loss
        (finite or not), on rank 0's Ctrl-C and time verdict, and on rank 0's clock, so they all
        stop at the same step.
        """
        self.model.train()
        accumulate = self.config.optim.accumulate
        done = self.progress.epoch_batches
        loader = self._loader(epoch, done)
        world = self.dist.world_size
        bar = None
        if self.progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=done + len(loader) * world,
                initial=done,
                desc=f"epoch {epoch + 1}/{self.config.budget.epochs}",
                unit="batch",
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        total = torch.full((), self.progress.epoch_loss_sum, device=self.device)
        committed = (done, total.clone())
        batches = done
        local = 0
        complete = True
        self._stop_requested = False
        previous_handler = self._defer_ctrl_c()
        try:
            for batch in loader:
                update = (local + 1) % accumulate == 0
                if local % accumulate == 0:
                    lr = self._set_lr(self._lr_clock(started))
                loss = self._train_step(batch, update)
                loss, stop, out_of_time, self._clock = self.dist.agree_step(
                    loss, self._stop_requested, not self._time_left(started, val_seconds),
                    self._elapsed(started),
                )
                self._check_finite(loss, epoch)
                total += loss
                batches += world
                local += 1
                if update:
                    self.progress.step += 1
                    committed = (batches, total.clone())
                    if stop:
                        raise KeyboardInterrupt
                if bar is not None:
                    bar.update(world)
                    if local % 5 == 0:
                        bar.set_postfix(
                            loss=f"{total.item() / batches:.4f}", lr=f"{lr:.2e}", **self._bar_extra(started)
                        )
                if out_of_time:
                    complete = False
                    break
        except KeyboardInterrupt:
            self.progress.epoch_batches, self.progress.epoch_loss_sum = committed[0], committed[1].item()
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            if bar is not None:
                bar.close()
        self.progress.epoch_batches, self.progress.epoch_loss_sum = batches, total.item()
        return self.progress.epoch_loss_sum / max(batches, 1), batches, complete

    def _defer_ctrl_c(self) -> Any:
        """Make the first Ctrl-C a request to stop after the current step; returns the old handler."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def request_stop(signum: int, frame: Any) -> None:
            # With several processes a repeated Ctrl-C must not stop one rank alone (the others would
            # wait in a collective): the stop is the agreed one; torchrun kills after 30 s anyway.
            if self._stop_requested and not self.dist.enabled:
                raise KeyboardInterrupt
            if self._stop_requested:
                return
            self._stop_requested = True
            self.log("Ctrl-C: stopping after this step and saving (Ctrl-C again stops at once)")

        return signal.signal(signal.SIGINT, request_stop)

    def _bar_extra(self, started: float) -> dict[str, str]:
        extra = {}
        best = self.progress.best_value
        if best is not None:
            extra[f"best_{self.config.budget.monitor}"] = f"{best:.4f}"
        budget = self.config.budget.max_minutes
        if budget:
            left = max(0.0, budget * 60 - self._elapsed(started))
            extra["left"] = f"{int(left // 60)}m{int(left % 60):02d}s"
        return extra

    @property
    def evaluated_model(self) -> nn.Module:
        """The network that is validated and saved: the weight average if ``optim.ema`` is set."""
        return self.average.module if self.average is not None else self.model

    def validate(self) -> tuple[dict[str, Any], list[Any]]:
        """Whole-image metrics on the validation set (empty dict without one)."""
        if not self.val_items:
            return {}, []
        predictor = self.task.predictor(self.evaluated_model, self.config, self.data, self.device)
        metrics, scored = self.task.validate(predictor, self.val_items, self.data)
        self.model.train()
        return metrics, scored

    def _is_better(self, value: float) -> bool:
        """Whether ``value`` of the monitored metric beats the best so far (without validation images
        the monitor is the training loss, which is minimised)."""
        best = self.progress.best_value
        if value != value:
            return False
        if best is None:
            return True
        mode = monitor_mode(self.config.budget.monitor) if self.val_items else "min"
        return value < best if mode == "min" else value > best

    def _save_best(self, scored: Sequence[Any]) -> None:
        save_model(self.evaluated_model, self.out)
        self.task.save_samples(self.out / SAMPLES_DIR, scored, self.data, self.config.num_samples)

    def _end_epoch(self, epoch: int, loss: float, batches: int, rate: float, started: float) -> bool:
        """Validate, keep the best, write the RUN files; returns True when early stopping triggers."""
        budget = self.config.budget
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.progress.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": loss,
            "batches": batches,
            "batches_per_s": rate,
        }
        stop = False
        if (epoch + 1) % budget.val_every == 0 or not self.val_items:
            t0 = time.perf_counter()
            metrics, scored = self.validate()
            row.update(metrics)
            row["val_s"] = time.perf_counter() - t0
            self._last_val_seconds = row["val_s"]
            value = row.get(budget.monitor, loss) if self.val_items else loss
            if budget.monitor not in row and self.val_items:
                raise ValueError(
                    f"budget.monitor {budget.monitor!r} is not a validation metric; use one of "
                    f"{', '.join(sorted(k for k in metrics))}"
                )
            if self._is_better(value):
                self.progress.best_value, self.progress.best_epoch = float(value), epoch + 1
                self.progress.epochs_since_best = 0
                self._save_best(scored)
            else:
                self.progress.epochs_since_best += 1
                stop = budget.patience is not None and self.progress.epochs_since_best >= budget.patience
        self.progress.epoch = epoch + 1
        self.progress.epoch_batches, self.progress.epoch_loss_sum = 0, 0.0
        self.progress.elapsed_s = self._elapsed(started)
        row["elapsed_s"] = self.progress.elapsed_s
        self.progress.history.append(row)
        self.task.end_epoch(self.evaluated_model, self.config, self.data, self.out, epoch + 1)
        self._write_run_files()
        if self.tensorboard is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.tensorboard.add_scalar(key, value, epoch + 1)
        self.log(self._epoch_line(row))
        return stop

    def _epoch_line(self, row: dict[str, Any]) -> str:
        parts = [f"epoch {row['epoch']}", f"loss {row['loss']:.4f}"]
        for key in self.task.curve_metrics:
            if key in row and row[key] == row[key]:
                parts.append(f"{key} {row[key]:.4f}")
        parts.append(f"{row['batches_per_s']:.2f} batch/s")
        parts.append(f"{row['elapsed_s'] / 60:.1f} min")
        if self.progress.best_epoch == row["epoch"]:
            parts.append("(best)")
        return "  ".join(parts)

    def _write_run_files(self) -> None:
        # State first: a metrics.csv row then always has its committed state behind it.
        save_state(self.out, self.model, self.optimizer, self.progress, self.average)
        write_csv(self.out / METRICS_FILE, self.progress.history)
        save_curves(self.progress.history, self.out / CURVES_FILE, self.task.curve_metrics)

    def fit(self) -> Run:
        """Train until the epochs, the time budget or the patience run out; returns the :class:`Run`."""
        try:
            return self._fit()
        finally:
            self.dist.close()

    def _fit(self) -> Run:
        """Validation, checkpoints and the RUN files are rank 0's; its decisions reach every rank.

        With several processes the others wait while rank 0 validates (in the broadcast of its
        decision, bounded by the process-group timeout): every task validates as it does alone,
        and the validation set is small beside an epoch of patches (``val_s`` in ``metrics.csv``).
        """
        self._setup()
        budget = self.config.budget
        started = time.perf_counter()
        self._elapsed_before = self.progress.elapsed_s
        self._last_val_seconds = 0.0
        if self.resume:
            self.log(f"resuming {self.out} at epoch {self.progress.epoch + 1}, step {self.progress.step}")
        self.progress.status = "running"
        self.log(self._summary_line())
        try:
            while self.progress.epoch < budget.epochs:
                epoch = self.progress.epoch
                time_left, self._clock = self.dist.from_main(
                    (self._time_left(started, self._last_val_seconds), self._elapsed(started))
                )
                if not time_left:
                    self.progress.status = "time budget reached"
                    break
                t0 = time.perf_counter()
                resumed_from = self.progress.epoch_batches
                loss, batches, complete = self._train_epoch(epoch, started, self._last_val_seconds)
                rate = (batches - resumed_from) / max(time.perf_counter() - t0, 1e-9)
                stop = self._end_epoch(epoch, loss, batches, rate, started) if self.dist.is_main else False
                stop, self.progress = self.dist.from_main((stop, self.progress))
                if stop:
                    self.progress.status = (
                        f"early stopping (no better {budget.monitor} for {budget.patience} epochs)"
                    )
                    break
                if not complete:
                    self.progress.status = "time budget reached"
                    break
            else:
                self.progress.status = "done"
        except KeyboardInterrupt:
            self.progress.status = "interrupted"
            if not self.dist.is_main:  # rank 0 saves the state all ranks agree on
                return self._partial_run()
            self.progress.elapsed_s = self._elapsed(started)
            save_state(self.out, self.model, self.optimizer, self.progress, self.average)
            self.log(
                f"interrupted: state saved in {self.out}; continue with `unetkit train --resume {self.out}`"
            )
            return Run.load(self.out) if (self.out / "model.safetensors").is_file() else self._partial_run()
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()
        self.progress.elapsed_s = (
            self._elapsed(started) if self.progress.status != "done" else self.progress.elapsed_s
        )
        if self.dist.is_main:
            if not (self.out / "model.safetensors").is_file():
                save_model(self.evaluated_model, self.out)
            save_state(self.out, self.model, self.optimizer, self.progress, self.average)
            note = self.task.end_training(
                load_model(self.out), self.config, self.data, self.val_items, self.out, self.device
            )
            if note:
                self.log(note)
        self.dist.barrier("waiting for rank 0 to write the RUN folder")
        self.log(
            f"finished ({self.progress.status}) after {self.progress.epoch} epochs, "
            f"{self.progress.elapsed_s / 60:.1f} min; "
            f"best {budget.monitor if self.val_items else 'training loss'} "
            f"{self.progress.best_value if self.progress.best_value is not None else float('nan'):.4f} "
            f"at epoch {self.progress.best_epoch}; run folder {self.out}"
        )
        return Run.load(self.out)

    def _partial_run(self) -> Run:
        return Run(self.out, self.config, self.data.classes, self.progress.history, self.progress.status)

    def _summary_line(self) -> str:
        n_params = sum(p.numel() for p in self.model.parameters())
        return (
            f"training {self.task.describe_network(self.config)} ({n_params:,} parameters) "
            f"for {self.task.describe(self.config)} "
            f"on {len(self.data.train)} images, validating on {len(self.data.val)}; "
            f"{self.steps_per_epoch} steps "
            f"of batch {self.config.data.batch_size} x patch {self.config.data.patch_size} per epoch; "
            f"device {self.device}, {torch.get_num_threads()} threads"
            + (f"; {self._distributed_summary()}" if self.dist.enabled else "")
        )

    def _distributed_summary(self) -> str:
        """The data-parallel plan: processes, global batch, the learning-rate rule, batch norm."""
        world, batch = self.dist.world_size, self.config.data.batch_size
        line = (
            f"{world} processes ({self.dist.backend}) x batch {batch} = global batch {world * batch} "
            f"(each epoch's patches split among them); learning rate {self.config.optim.lr:g} as "
            "configured, not scaled with the global batch (set --optim.lr to change it)"
        )
        if not has_batch_norm(self.model):
            return line
        if self.sync_batch_norm:
            return line + f"; batch norm synchronised across processes (SyncBatchNorm: batch {batch} < 8)"
        on_cuda = self.device.type == "cuda"
        reason = f"batch {batch} >= 8" if on_cuda else "SyncBatchNorm cannot run on the CPU"
        return line + (
            f"; plain batch norm with statistics of each process's batch of {batch} ({reason}), "
            "running statistics from rank 0"
        )


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress_bar: bool = True,
    log: Callable[[str], None] = print,
    model: Optional[nn.Module] = None,
) -> Run:
    """Train a network as ``config`` says and return the :class:`Run` (see :class:`Trainer`)."""
    return Trainer(config, resume=resume, progress_bar=progress_bar, log=log, model=model).fit()
