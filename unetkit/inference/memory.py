"""Tile size and batch for a prediction: the fastest plan whose working memory fits a budget.

A prediction holds, besides the process itself: the activations of one tile batch, the input tiles,
the band of rows being blended (accumulated outputs and weights, as wide as the image) and, for a
streamed TIFF, a cache of decoded input segments. :func:`working_set_bytes` estimates the first three
(erring on the large side); :func:`auto_tile_and_batch` keeps the tiles whose estimate fits the
budget (``max_memory``, default :data:`DEFAULT_MAX_MEMORY` or a share of the free memory, whichever is
less) and takes the one that computes the fewest voxels for the image: the sum over its tiles of their
input voxels plus a fixed cost per tile (:data:`TILE_OVERHEAD_VOXELS`). On the CPU the network's time
per input voxel barely depends on the tile as long as its first-level feature maps stay below
:data:`MAX_CPU_FEATURE_VOXELS` (BENCHMARKS.md, issue 16), so bigger tiles are not tried there and the
count of voxels is the speed; a valid-padding net wastes its context on small tiles, a same-padding net
its overlap on any tile, and every plan its last tile's overhang past the image edge.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import torch

from .tiling import plan_tiles

DEFAULT_MAX_MEMORY = 2**30
# Share of the free memory a prediction may use by default: the rest is for the image, the outputs the
# caller keeps and whatever else runs on the machine.
MEMORY_SHARE = {"cpu": 0.25, "cuda": 0.5}
# Tile edges tried (each rounded down to a size the network accepts).
TILE_EDGES = {2: (256, 384, 512, 640, 768, 1024, 1280), 3: (48, 64, 96, 128, 160)}
MAX_BATCH = {"cpu": 4, "cuda": 32}
# The time of one tile's fixed costs (reading, the network's per-call overhead, blending) in voxels of
# network work: keeps plans from tiny tiles that would be equal on voxels alone.
TILE_OVERHEAD_VOXELS = {2: 64 * 64, 3: 16**3}
# On the CPU, a network's time per voxel grows once its full-resolution feature maps of one tile pass
# about this many channel-voxels (96 MiB in float32): the paper net (64 channels) predicts fastest with
# 572 px tiles and slows down by 1.4-2x per input voxel at 1020 px, while the tutorial net (16 channels)
# keeps its speed up to 1024 px (BENCHMARKS.md, issue 16).
MAX_CPU_FEATURE_VOXELS = 24 * 2**20
# Copies of the blending band alive at once: the accumulator and weights, the slab handed on and the
# consumer's own arrays made from it (labels, a re-buffered band for the TIFF writer).
BAND_COPIES = 3


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


def activation_bytes_per_voxel(model: torch.nn.Module) -> float:
    """Rough peak activation memory of one forward pass per input voxel, in bytes (float32).

    Per level ``l`` the network holds the skip features (``c_l`` channels) and, while it
    works, about four more maps of ``c_l`` channels (conv input and output, the
    concatenation); level ``l`` has ``2**(-dims*l)`` of the voxels. An estimate that errs on
    the large side, used only to pick a tile size that fits.
    """
    config = model.config
    depth = config.depth if config.architecture != "plain_fcn" else 0
    levels = sum(2.0**level / 2.0 ** (config.dims * level) for level in range(depth + 1))
    return 4.0 * 5 * config.base_channels * levels + 4.0 * (config.in_channels + 2 * config.num_classes)


def working_set_bytes(
    model: torch.nn.Module, shape: Sequence[int], tile_in: Sequence[int], tile_out: Sequence[int], batch: int,
    out_channels: int,
) -> float:
    """Estimated bytes a prediction of spatial ``shape`` holds with these tiles and batch: activations,
    input tiles, and :data:`BAND_COPIES` blending bands of two tile rows as wide as the image."""
    tile_voxels = math.prod(tile_in)
    activations = batch * tile_voxels * activation_bytes_per_voxel(model)
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
) -> tuple[tuple[int, ...], int]:
    """Tile edge per axis and tiles per batch for an image of spatial ``shape`` (see the module).

    Either can be fixed by the caller. The batch is 1 on the CPU (the network's time per voxel does
    not fall with the batch there; more tiles would only hold more memory) and as many tiles as fit,
    up to :data:`MAX_BATCH`, on a GPU.
    """
    budget = memory_budget(device, max_memory)
    channels = out_channels if out_channels is not None else model.config.num_classes
    batch = batch_size or 1
    if tile_size is None:
        tile_size = fastest_fitting_tile(model, shape, batch, channels, budget, overlap, device)
    tile = tuple(tile_size)
    if batch_size is None and device.type != "cpu":
        plan = plan_tiles(model, shape, tile, overlap)
        batch = 1
        while (
            batch < min(MAX_BATCH.get(device.type, 4), len(plan))
            and working_set_bytes(model, shape, plan.tile_in, plan.tile_out, batch + 1, channels) <= budget
        ):
            batch += 1
    return tile, batch


def fastest_fitting_tile(
    model: torch.nn.Module, shape: Sequence[int], batch: int, channels: int, budget: float, overlap: float,
    device: torch.device,
) -> tuple[int, ...]:
    """The tile (per axis) of :data:`TILE_EDGES` (for a valid-padding net, also those plus its context)
    that computes the fewest voxels for ``shape`` within ``budget`` (on the CPU: and within
    :data:`MAX_CPU_FEATURE_VOXELS`); the one that needs the least memory if none fits."""
    dims = len(shape)
    edges = set(TILE_EDGES[dims])
    if model.context() > 0:  # a valid-padding net: also the edges that give these outputs
        edges |= {edge + 2 * model.context() for edge in TILE_EDGES[dims]}
    if device.type == "cpu":
        largest = (MAX_CPU_FEATURE_VOXELS / model.config.base_channels) ** (1 / dims)
        edges = {edge for edge in edges if edge <= largest} or {min(edges)}
    best = None
    for edge in sorted(edges):
        try:
            plan = plan_tiles(model, shape, (edge,) * dims, overlap)
        except ValueError:  # too small for the network's pooling grid
            continue
        work = len(plan) * (math.prod(plan.tile_in) + TILE_OVERHEAD_VOXELS[dims])
        memory = working_set_bytes(model, shape, plan.tile_in, plan.tile_out, batch, channels)
        fits = memory <= budget
        rank = (not fits, work if fits else memory)
        if best is None or rank < best[0]:
            best = (rank, plan.tile_in)
    if best is None:
        raise ValueError(
            f"no tile of {max(edges)} px or less suits this network (context {model.context()} px per side): "
            "give tile_size (--tile-size)"
        )
    return best[1]
