"""Tile size and batch for a prediction: the fastest plan whose working memory fits a budget.

A prediction holds, besides the process itself: the activations of one tile batch, the input tiles,
the band of rows being blended (accumulated outputs and weights, as wide as the image) and, for a
streamed TIFF, a cache of decoded input segments. :func:`working_set_bytes` estimates the first three
(erring on the large side); :func:`auto_tile_and_batch` keeps the tiles whose estimate fits the
budget (``max_memory``, default :data:`DEFAULT_MAX_MEMORY` or a share of the free memory, whichever is
less) and takes the one with the least work for the image (:func:`plan_work`): the input voxels of its
tiles, each weighted by how much slower the network runs per voxel on a tile that big, plus a fixed
cost per tile. A valid-padding net wastes its context on small tiles, a same-padding net its overlap,
every plan its last tile's overhang past the image edge; on the CPU big tiles of wide networks run
slower per voxel (their feature maps outgrow the caches: BENCHMARKS.md, issue 16).
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import torch

from .tiling import TilePlan, plan_tiles

DEFAULT_MAX_MEMORY = 2**30
# Share of the free memory a prediction may use by default: the rest is for the image, the outputs the
# caller keeps and whatever else runs on the machine.
MEMORY_SHARE = {"cpu": 0.25, "cuda": 0.5}
# Tile edges tried (each rounded down to a size the network accepts).
TILE_EDGES = {2: (256, 384, 512, 640, 768, 1024, 1280), 3: (48, 64, 96, 128, 160)}
MAX_BATCH = {"cpu": 4, "cuda": 32}
# The time of one tile's fixed costs (the network's per-call overhead, reading, blending) in voxels of
# network work: a 256 px tile of the tutorial net took 0.035 s against 0.076 s for a 512 px one (4x the
# voxels) in bfloat16 on this project's CPU, about 100 k voxels' worth of overhead per call.
TILE_OVERHEAD_VOXELS = {2: 96 * 1024, 3: 48**3}
# On the CPU a network's time per input voxel grows with its first-level feature maps of one tile
# (base channels x tile voxels), modelled as 1 + that / this. Measured (bfloat16, per input voxel,
# against the smallest tile): the paper net (64 channels) 1.27x slower at 572 px, 1.45x at 764 px, 1.77x
# at 1020 px; the tutorial net (16 channels) 1.19x slower at 768 px and 1.34x at 1024 px than at 512 px.
# The straight line through the small tiles over-predicts the big ones a little; BENCHMARKS.md, issue 16.
CPU_SLOWDOWN_CHANNEL_VOXELS = 32 * 2**20
# Float32 copies of the blending band (outputs and weights, two tile rows as wide as the image) alive
# at once: the accumulator while it grows, the slab handed on, and the consumer's arrays made from it
# (int64 labels, the re-buffered band for the TIFF writer). Calibrated on a 20000 px wide streamed
# prediction (BENCHMARKS.md, issue 16): with 3 the estimate was 1.75x below the measured peak above the
# process's own memory, for 512 and 768 px tiles alike.
BAND_COPIES = 5


def available_memory(device: torch.device) -> int:
    """Bytes free: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def memory_budget(device: torch.device, max_memory: Optional[int] = None) -> int:
    """Bytes a prediction may hold: ``max_memory`` when given, else the smaller of
    :data:`DEFAULT_MAX_MEMORY` and a share of the free memory (on CUDA: a share of the GPU's free memory)."""
    if max_memory is not None:
        if max_memory <= 0:
            raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory}")
        return int(max_memory)
    free = available_memory(device) * MEMORY_SHARE.get(device.type, 0.25)
    return int(free if device.type == "cuda" else min(DEFAULT_MAX_MEMORY, free))


def activation_bytes_per_voxel(model: torch.nn.Module, element_bytes: int = 4) -> float:
    """Rough peak activation memory of one forward pass per input voxel, in bytes (``element_bytes``
    per value: 4 in float32, 2 in bfloat16 / float16).

    Per level ``l`` the network holds the skip features (``c_l`` channels) and, while it
    works, about four more maps of ``c_l`` channels (conv input and output, the
    concatenation); level ``l`` has ``2**(-dims*l)`` of the voxels. An estimate that errs on
    the large side, used only to pick a tile size that fits.
    """
    config = model.config
    depth = config.depth if config.architecture != "plain_fcn" else 0
    levels = sum(2.0**level / 2.0 ** (config.dims * level) for level in range(depth + 1))
    return element_bytes * (5.0 * config.base_channels * levels + config.in_channels + 2 * config.num_classes)


def working_set_bytes(
    model: torch.nn.Module, shape: Sequence[int], tile_in: Sequence[int], tile_out: Sequence[int], batch: int,
    out_channels: int, element_bytes: int = 4,
) -> float:
    """Estimated bytes a prediction of spatial ``shape`` holds with these tiles and batch: activations
    (``element_bytes`` per value), input tiles, and :data:`BAND_COPIES` blending bands of two tile rows
    as wide as the image."""
    tile_voxels = math.prod(tile_in)
    activations = batch * tile_voxels * activation_bytes_per_voxel(model, element_bytes)
    inputs = 2 * batch * model.config.in_channels * tile_voxels * 4
    band_rows = min(2 * tile_out[0], shape[0])
    band = BAND_COPIES * (out_channels + 1) * 4 * band_rows * math.prod(shape[1:])
    return activations + inputs + band


def auto_tile_and_batch(
    model: torch.nn.Module,
    shape: Sequence[int],
    device: torch.device,
    tile_size: Optional[Sequence[int]] = None,
    batch_size: Optional[int] = None,
    *,
    overlap: float = 0.25,
    out_channels: Optional[int] = None,
    max_memory: Optional[int] = None,
    element_bytes: int = 4,
) -> tuple[tuple[int, ...], int]:
    """Tile edge per axis and tiles per batch for an image of spatial ``shape`` (see the module).

    Either can be fixed by the caller. ``element_bytes``: of the network's activations (2 when it
    computes in bfloat16 or float16). The batch is 1 on the CPU (the network's time per voxel does
    not fall with the batch there; more tiles would only hold more memory) and as many tiles as fit,
    up to :data:`MAX_BATCH`, on a GPU.
    """
    budget = memory_budget(device, max_memory)
    channels = out_channels if out_channels is not None else model.config.num_classes
    batch = batch_size or 1
    if tile_size is None:
        tile_size = fastest_fitting_tile(
            model, shape, batch, channels, budget, overlap, device, element_bytes
        )
    tile = tuple(tile_size)
    if batch_size is None and device.type != "cpu":
        plan = plan_tiles(model, shape, tile, overlap)
        batch = 1
        while (
            batch < min(MAX_BATCH.get(device.type, 4), len(plan))
            and working_set_bytes(
                model, shape, plan.tile_in, plan.tile_out, batch + 1, channels, element_bytes
            ) <= budget
        ):
            batch += 1
    return tile, batch


def plan_work(model: torch.nn.Module, plan: TilePlan, device: torch.device) -> float:
    """The modelled time of a plan, in voxels of network work: per tile, its input voxels times the
    per-voxel slowdown of a tile that big (on the CPU, :data:`CPU_SLOWDOWN_CHANNEL_VOXELS`), plus
    :data:`TILE_OVERHEAD_VOXELS`."""
    voxels = math.prod(plan.tile_in)
    slowdown = 1.0
    if device.type == "cpu":
        slowdown += model.config.base_channels * voxels / CPU_SLOWDOWN_CHANNEL_VOXELS
    return len(plan) * (voxels * slowdown + TILE_OVERHEAD_VOXELS[len(plan.tile_in)])


def fastest_fitting_tile(
    model: torch.nn.Module, shape: Sequence[int], batch: int, channels: int, budget: float, overlap: float,
    device: torch.device, element_bytes: int = 4,
) -> tuple[int, ...]:
    """The tile (per axis) of :data:`TILE_EDGES` (for a valid-padding net, also those plus its context)
    with the least :func:`plan_work` for ``shape`` within ``budget``; the one that needs the least
    memory if none fits."""
    dims = len(shape)
    edges = set(TILE_EDGES[dims])
    if model.context() > 0:  # a valid-padding net: also the edges that give these outputs
        edges |= {edge + 2 * model.context() for edge in TILE_EDGES[dims]}
    best = None
    for edge in sorted(edges):
        try:
            plan = plan_tiles(model, shape, (edge,) * dims, overlap)
        except ValueError:  # too small for the network's pooling grid
            continue
        memory = working_set_bytes(model, shape, plan.tile_in, plan.tile_out, batch, channels, element_bytes)
        fits = memory <= budget
        rank = (not fits, plan_work(model, plan, device) if fits else memory)
        if best is None or rank < best[0]:
            best = (rank, plan.tile_in)
    if best is None:
        raise ValueError(
            f"no tile of {max(edges)} px or less suits this network (context {model.context()} px per side): "
            "give tile_size (--tile-size)"
        )
    return best[1]
