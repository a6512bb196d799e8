"""Where the tiles go, how they are read with mirrored borders, and how they are blended.

Two strategies, chosen by the network's padding:

* **Valid padding** (``model.context() > 0``), the overlap-tile strategy of the U-Net
  paper: the image is mirror-padded by the context (numpy ``"reflect"``: the border pixel
  is not repeated, as in the paper's Fig. 2), cut into input tiles of a valid size, and the
  output tiles are placed edge to edge. The tile stride is the output tile size rounded down
  to the pooling grid (``2**depth``), so every tile sees the max-pool grid exactly as one
  pass over the whole padded image does: the stitched result equals that single pass (up to
  float rounding). The few output pixels where neighbours overlap (4 per side for the
  paper net) hold identical values and are averaged.
* **Same padding**: tiles overlap by ``overlap`` and are blended with a weight window
  (``"gaussian"``, ``"linear"`` or ``"constant"``); the tile positions and the Gaussian
  (sigma = 0.125 of the tile) are those of MONAI's ``sliding_window_inference``, so the
  ``"constant"`` mode gives MONAI's results and ``"gaussian"`` differs only in the weight
  floor (see ``MIN_WEIGHT``).

Everything here is numpy; the predictor feeds the tiles through the network.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

BLEND_MODES = ("gaussian", "linear", "constant")
# Smallest weight of a window along one axis, so that pixels seen by one tile only still get its
# prediction. MONAI floors the N-d product instead; that makes every tile weigh the same in the
# outermost rows of the image, where the Gaussian falls below the floor on one axis, and brings
# back the seams there; flooring each axis keeps the window separable and the blend smooth.
MIN_WEIGHT = 1e-3


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one spatial axis.

    Tile ``i`` reads input ``[starts[i] - offset, starts[i] - offset + tile_in)`` (positions
    outside ``[0, length)`` are mirrored) and its network output covers
    ``[starts[i], starts[i] + tile_out)``, clipped to ``[0, length)``.
    """

    length: int
    tile_in: int
    tile_out: int
    offset: int
    starts: tuple[int, ...]


@dataclass(frozen=True)
class TilePlan:
    """The tiles of an N-d image: every combination of the per-axis starts (raster order)."""

    axes: tuple[AxisPlan, ...]

    @property
    def tile_in(self) -> tuple[int, ...]:
        return tuple(a.tile_in for a in self.axes)

    @property
    def tile_out(self) -> tuple[int, ...]:
        return tuple(a.tile_out for a in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.length for a in self.axes)

    def __len__(self) -> int:
        return math.prod(len(a.starts) for a in self.axes)

    def tiles(self) -> list[tuple[int, ...]]:
        """Output start of every tile, sorted by the first axis (the streaming axis)."""
        return list(itertools.product(*(a.starts for a in self.axes)))

    def input_start(self, out_start: Sequence[int]) -> tuple[int, ...]:
        return tuple(s - a.offset for s, a in zip(out_start, self.axes))


def grid_step(model) -> int:
    """Distance between consecutive valid input sizes (``2**depth`` for a U-Net, 1 without pooling)."""
    first = model.valid_input_sizes(model.axis_min_input(), model.axis_min_input() + 4096)[:2]
    return first[1] - first[0]


def _smallest_valid_at_least(model, size: int) -> int:
    return model.nearest_valid_input_sizes(max(size, 1))[1]


def plan_axis_valid(model, length: int, tile_in: int) -> AxisPlan:
    """Overlap-tile plan for a valid-padding net along one axis.

    ``tile_in`` is made valid (the nearest valid size at or below it) and shrunk to the
    smallest valid tile that covers the whole axis when the image is small.
    """
    context = model.context()
    step = grid_step(model)
    below, above = model.nearest_valid_input_sizes(tile_in)
    tile_in = below if below is not None else above
    covering = model.input_size_for(length)
    if covering <= tile_in:
        return AxisPlan(length, covering, model.axis_output_size(covering), context, (0,))
    tile_out = model.axis_output_size(tile_in)
    stride = (tile_out // step) * step
    if stride == 0:
        raise ValueError(
            f"tile size {tile_in} is too small for this network: its output ({tile_out} px) must be at "
            f"least the pooling grid ({step} px); use a tile of at least {model.input_size_for(step)}"
        )
    starts = tuple(range(0, length, stride))
    return AxisPlan(length, tile_in, tile_out, context, starts)


def plan_axis_same(model, length: int, tile: int, overlap: float) -> AxisPlan:
    """Blended-tile plan for a same-padding net along one axis (MONAI's tile positions).

    ``overlap`` below 1 is a fraction of the tile (stride ``int(tile * (1 - overlap))``, as
    MONAI), 1 or more is a number of pixels.
    """
    if length < tile:
        tile = _smallest_valid_at_least(model, length)
    else:
        below, above = model.nearest_valid_input_sizes(tile)
        tile = below if below is not None else above
    if length <= tile:
        return AxisPlan(length, tile, tile, 0, (0,))
    stride = int(tile * (1 - overlap)) if overlap < 1 else tile - int(overlap)
    if stride < 1:
        raise ValueError(f"overlap {overlap} leaves no stride for tile size {tile}: use a smaller overlap")
    count = math.ceil((length - tile) / stride) + 1
    starts = tuple(min(i * stride, length - tile) for i in range(count))
    return AxisPlan(length, tile, tile, 0, starts)


def plan_tiles(model, shape: Sequence[int], tile: Sequence[int], overlap: float) -> TilePlan:
    """The tile plan for an image of spatial ``shape`` and a requested tile size per axis."""
    if model.context() > 0:
        axes = tuple(plan_axis_valid(model, n, t) for n, t in zip(shape, tile))
    else:
        axes = tuple(plan_axis_same(model, n, t, overlap) for n, t in zip(shape, tile))
    return TilePlan(axes)


def window_1d(size: int, mode: str, ramp: int, sigma_scale: float = 0.125) -> np.ndarray:
    """Per-axis blending weights, shape ``(size,)``.

    ``gaussian``: ``exp(-x**2 / (2 sigma**2))`` with ``sigma = sigma_scale * size`` around
    the centre (MONAI's formula); ``linear``: rises over ``ramp`` pixels at each end;
    ``constant``: ones.
    """
    if mode == "gaussian":
        x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        return np.exp(x**2 / (-2 * (sigma_scale * size) ** 2))
    if mode == "linear":
        ramp = max(1, min(ramp, size // 2))
        edge = (np.arange(size) + 1.0) / (ramp + 1.0)
        return np.minimum(1.0, np.minimum(edge, edge[::-1]))
    if mode == "constant":
        return np.ones(size)
    raise ValueError(f"blend mode must be one of {BLEND_MODES}, got {mode!r}")


def blend_window(plan: TilePlan, mode: str, sigma_scale: float = 0.125) -> np.ndarray:
    """The N-d weight window of one output tile, float32 of shape ``plan.tile_out``."""
    window = np.ones((), dtype=np.float64)
    for axis in plan.axes:
        stride = axis.starts[1] - axis.starts[0] if len(axis.starts) > 1 else axis.tile_out
        w = window_1d(axis.tile_out, mode, axis.tile_out - stride, sigma_scale)
        window = np.multiply.outer(window, np.maximum(w, MIN_WEIGHT))
    return window.astype(np.float32)


def reflect_indices(start: int, size: int, length: int) -> np.ndarray:
    """Indices ``start .. start+size-1`` mirrored into ``[0, length)`` like ``np.pad(mode="reflect")``."""
    idx = np.arange(start, start + size)
    if length == 1:
        return np.zeros(size, dtype=np.int64)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx)


class RegionSource(Protocol):
    """Anything that can hand out channel-first boxes of an image without loading all of it."""

    shape: tuple[int, ...]  # (C, *S)

    def read(self, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        """The box ``[start, stop)`` of the spatial axes, all channels: ``(C, *box)``."""
        ...


class ArraySource:
    """A :class:`RegionSource` over an in-memory ``(C, *S)`` array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape

    def read(self, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        return self.array[(slice(None), *(slice(a, b) for a, b in zip(start, stop)))]


def read_mirrored(source: RegionSource, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """The box at ``start`` of ``size`` (may reach outside the image, mirrored in): ``(C, *size)``."""
    spatial = source.shape[1:]
    if all(a >= 0 and a + n <= length for a, n, length in zip(start, size, spatial)):
        return source.read(start, [a + n for a, n in zip(start, size)])
    indices = [reflect_indices(a, n, length) for a, n, length in zip(start, size, spatial)]
    low = [int(i.min()) for i in indices]
    high = [int(i.max()) + 1 for i in indices]
    box = source.read(low, high)
    return box[(slice(None), *np.ix_(*(i - lo for i, lo in zip(indices, low))))]


TileFn = Callable[[np.ndarray], np.ndarray]


def blend_tiles(
    source: RegionSource,
    plan: TilePlan,
    predict_batch: TileFn,
    window: np.ndarray,
    out_channels: int,
    batch_size: int,
    prepare: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    on_batch: Optional[Callable[[int], None]] = None,
):
    """Run every tile through ``predict_batch`` and yield finished slabs along the first axis.

    ``predict_batch`` maps inputs ``(N, C, *plan.tile_in)`` to window-weighted outputs
    ``(N, out_channels, *plan.tile_out)`` (float32 numpy). ``prepare`` (e.g. normalisation)
    is applied to every input box after reading. Yields ``(row_start, row_stop, block)``
    with ``block`` float32 ``(out_channels, row_stop - row_start, *S[1:])``, the weighted
    average of the tiles, in order; only the rows not yet finished are held in memory, so
    a big image streams with memory proportional to a band of tiles.
    """
    spatial = plan.shape
    tiles = plan.tiles()
    rest = spatial[1:]
    done = 0
    acc = np.zeros((out_channels, 0, *rest), dtype=np.float32)
    weight = np.zeros((0, *rest), dtype=np.float32)
    for first in range(0, len(tiles), batch_size):
        batch = tiles[first:first + batch_size]
        inputs = [read_mirrored(source, plan.input_start(t), plan.tile_in) for t in batch]
        if prepare is not None:
            inputs = [prepare(x) for x in inputs]
        outputs = predict_batch(np.stack(inputs))
        end = min(max(t[0] for t in batch) + plan.tile_out[0], spatial[0])
        if end - done > acc.shape[1]:
            grow = end - done - acc.shape[1]
            acc = np.concatenate([acc, np.zeros((out_channels, grow, *rest), np.float32)], axis=1)
            weight = np.concatenate([weight, np.zeros((grow, *rest), np.float32)], axis=0)
        for start, out in zip(batch, outputs):
            stop = [min(a + n, length) for a, n, length in zip(start, plan.tile_out, spatial)]
            crop = tuple(slice(0, b - a) for a, b in zip(start, stop))
            rows = slice(start[0] - done, stop[0] - done)
            box = (rows, *(slice(a, b) for a, b in zip(start[1:], stop[1:])))
            acc[(slice(None), *box)] += out[(slice(None), *crop)]
            weight[box] += window[crop]
        if on_batch is not None:
            on_batch(len(batch))
        finished = tiles[first + batch_size][0] if first + batch_size < len(tiles) else spatial[0]
        if finished > done:
            k = finished - done
            yield done, finished, acc[:, :k] / weight[:k]
            acc, weight = acc[:, k:].copy(), weight[k:].copy()
            done = finished
