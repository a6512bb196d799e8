"""Choosing the tile size and the tile batch from the network and the memory at hand."""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import torch

# Share of the available memory the tiles of one batch may use for activations: the rest is
# for the image, the blending buffers and whatever else runs on the machine.
MEMORY_SHARE = {"cpu": 0.25, "cuda": 0.5}
# Largest automatic tile edge: past this, bigger tiles barely cut the overlap overhead.
MAX_TILE = {2: 1024, 3: 128}
MAX_BATCH = {"cpu": 4, "cuda": 32}


def available_memory(device: torch.device) -> int:
    """Bytes free for activations: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` on the CPU."""
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


def auto_tile_and_batch(
    model: torch.nn.Module,
    shape: Sequence[int],
    device: torch.device,
    tile_size: Optional[Sequence[int]] = None,
    batch_size: Optional[int] = None,
) -> tuple[tuple[int, ...], int]:
    """Tile edge per axis and tiles per batch for an image of spatial ``shape``.

    The tile is the largest cube (square) up to ``MAX_TILE`` whose activations fit in the
    memory share, no bigger than the image needs; the batch is as many such tiles as fit,
    up to ``MAX_BATCH``. Either can be fixed by the caller.
    """
    dims = len(shape)
    budget = available_memory(device) * MEMORY_SHARE.get(device.type, 0.25)
    per_voxel = activation_bytes_per_voxel(model)
    if tile_size is None:
        context = model.context()
        edge = MAX_TILE[dims]
        while edge > 2 * context + 16 and (edge**dims) * per_voxel > budget:
            edge = int(edge * 0.8)
        needed = max(shape) + 2 * context
        tile = tuple([min(edge, needed)] * dims)
    else:
        tile = tuple(tile_size)
    if batch_size is None:
        tile_bytes = math.prod(tile) * per_voxel
        batch_size = int(max(1, min(MAX_BATCH.get(device.type, 4), budget // max(tile_bytes, 1.0))))
    return tile, batch_size
