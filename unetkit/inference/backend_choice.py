"""The fastest backend for a network on this machine, measured once and remembered.

``backend="auto"`` (the default of ``unetkit predict`` and ``serve``) runs one batch of the predictor's
own tile through each backend that can run it here — PyTorch in the precision the predictor computes
in (and in float32 when that is reduced: bfloat16 does not pay for every network), and ONNX Runtime
(float32, CPU) when it is installed — and keeps the fastest,
provided it gives the same labels as PyTorch in float32 (restoration: the same image within 1e-3;
PyTorch in the predictor's own precision is exempt: whether that keeps the labels was measured on the
run's validation images, :mod:`unetkit.inference.agreement`).
The answer is cached per machine (CPU, threads, library versions), network architecture, tile, batch
and precision in ``backends.json`` under :func:`cache_dir`, so only the first prediction pays for the
measurement.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..activation import probabilities_to_labels
from ..utils.atomic import atomic_write_json

CACHE_ENV = "UNETKIT_CACHE_DIR"
CACHE_FILE = "backends.json"
# The shape a backend is timed for: a big image, so the tile is the one a big prediction uses.
PROBE_SHAPE = {2: (2048, 2048), 3: (160, 160, 160)}
MIN_AGREEMENT = 0.999
MAX_IMAGE_DIFFERENCE = 1e-3
REPEATS = 3


@dataclass
class BackendChoice:
    """What ``backend="auto"`` chose: ``backend``, the seconds per tile batch of every candidate
    (``seconds``), the share of identical labels against PyTorch float32 (``agreement``), and whether it
    came from the cache (``cached``, with the cache file in ``cache_file``)."""

    backend: str
    seconds: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    tile: tuple[int, ...] = ()
    batch: int = 1
    cached: bool = False
    cache_file: str = ""

    def summary(self) -> str:
        timings = ", ".join(f"{name} {s:.3g} s" for name, s in self.seconds.items())
        how = "cached" if self.cached else "measured now"
        tile = "x".join(map(str, self.tile))
        return (f"backend {self.backend} ({how} for tiles {tile}, batch {self.batch}: {timings}; "
                f"cache {self.cache_file})")


def cache_dir() -> Path:
    """``$UNETKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/unetkit``, else ``~/.cache/unetkit``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unetkit"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> dict[str, Any]:
    """What makes one machine's timings differ from another's."""
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "onnxruntime": ort_version,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def choice_key(predictor, tile: tuple[int, ...], batch: int) -> str:
    """The cache key of a predictor's network architecture, precision, device, tile and batch here."""
    details = {
        "machine": machine_key(), "model": predictor.model.config.to_dict(), "task": predictor.task,
        "precision": predictor.precision, "device": str(predictor.device), "tile": list(tile),
        "batch": batch, "tta": predictor.tta,
    }
    return hashlib.sha256(json.dumps(details, sort_keys=True).encode()).hexdigest()


def read_cache(path: Path) -> dict[str, Any]:
    """The cache file's entries; an unreadable or damaged file counts as empty (it is rewritten)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def probe_batch(predictor) -> np.ndarray:
    """A seeded, smooth random batch of the predictor's tile for a big image: ``(N, C, *tile)``."""
    plan, batch = predictor.plan(PROBE_SHAPE[predictor.dims])
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((batch, predictor.in_channels, *plan.tile_in)).astype(np.float32)
    return noise.cumsum(axis=-1) / np.sqrt(plan.tile_in[-1])


def seconds_per_call(forward: Callable[[np.ndarray], torch.Tensor], batch: np.ndarray) -> float:
    start = time.perf_counter()
    forward(batch)
    return time.perf_counter() - start


def agreement(predictor, output: torch.Tensor, reference: torch.Tensor) -> float:
    """Share of identical labels (segmentation) or 1/0 for an image within ``MAX_IMAGE_DIFFERENCE``."""
    if predictor.task != "segmentation":
        return float((output - reference).abs().max() <= MAX_IMAGE_DIFFERENCE)
    classes = min(predictor.num_classes, output.shape[1])
    labels = probabilities_to_labels(output[:, :classes])
    return float((labels == probabilities_to_labels(reference[:, :classes])).float().mean())


def float32_reference(predictor, batch: np.ndarray) -> torch.Tensor:
    """The PyTorch predictor's outputs for ``batch`` computed in float32, whatever its precision."""
    was_training = predictor.model.training
    predictor.model.eval()
    try:
        return predictor._forward(batch, predictor.model).cpu()
    finally:
        predictor.model.train(was_training)


def measure(candidates: dict[str, Any], reference_predictor, repeats: int = REPEATS) -> BackendChoice:
    """Time every candidate predictor on one probe batch, interleaved; the fastest that agrees wins."""
    batch = probe_batch(reference_predictor)
    reference = float32_reference(reference_predictor, batch)
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    agree = {}
    forwards = {name: partial(p._forward, network=p.prediction_network()) for name, p in candidates.items()}
    for name, predictor in candidates.items():  # also the warm-up: first-call allocations, kernel choices
        agree[name] = agreement(predictor, forwards[name](batch).cpu(), reference)
    for _ in range(repeats):  # interleaved, so that each sees the same load on a shared machine
        for name, forward in forwards.items():
            seconds[name].append(seconds_per_call(forward, batch))
    median = {name: float(np.median(s)) for name, s in seconds.items()}
    # "torch" computes in the precision the run's own measurement allowed (unetkit.inference.agreement);
    # the other candidates must give PyTorch float32's labels on the probe.
    valid = [name for name in candidates if name == "torch" or agree[name] >= MIN_AGREEMENT]
    best = min(valid, key=median.__getitem__)
    return BackendChoice(best, median, agree, tuple(batch.shape[2:]), batch.shape[0])


def fastest_predictor(torch_predictor, build: dict[str, Callable[[], Any]]) -> Any:
    """The fastest of ``torch_predictor`` and the predictors ``build`` makes (name -> factory) for this
    machine, from the cache or measured now (then cached). The winner carries ``backend_choice``."""
    plan, batch = torch_predictor.plan(PROBE_SHAPE[torch_predictor.dims])
    key = choice_key(torch_predictor, plan.tile_in, batch)
    path = cache_dir() / CACHE_FILE
    entries = read_cache(path)
    choice = cached_choice(entries.get(key), {"torch", *build})
    if choice is not None:
        choice.cache_file = str(path)
        winner = torch_predictor if choice.backend == "torch" else build[choice.backend]()
    else:
        candidates = {"torch": torch_predictor}
        for name, make in build.items():
            try:
                candidates[name] = make()
            except (OSError, ValueError, RuntimeError):  # e.g. a package without ONNX weights
                continue
        choice = measure(candidates, torch_predictor)
        choice.cache_file = str(path)
        entries[key] = {**asdict(choice), "cached": True,
                        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, entries)
        except OSError:  # a read-only home: the choice still holds for this process
            pass
        winner = candidates[choice.backend]
    winner.backend_choice = choice
    return winner


def cached_choice(entry: Any, backends: set[str]) -> Optional[BackendChoice]:
    """The :class:`BackendChoice` of a cache entry, or ``None`` if it is missing, damaged or names a
    backend that is not among ``backends`` (e.g. ONNX Runtime uninstalled since)."""
    if not isinstance(entry, dict) or entry.get("backend") not in backends:
        return None
    try:
        return BackendChoice(
            backend=entry["backend"], seconds=dict(entry["seconds"]), agreement=dict(entry["agreement"]),
            tile=tuple(entry["tile"]), batch=int(entry["batch"]), cached=True,
        )
    except (KeyError, TypeError, ValueError):
        return None
