"""Images bigger than memory: read a TIFF tile by tile, write the result as a tiled TIFF.

:class:`TiffSource` decodes only the TIFF tiles (or strips) a prediction tile touches, with
tifffile's own per-segment decoder, and keeps a bounded cache of decoded segments; the
predictor's slabs are cut into output tiles and handed to ``tifffile.imwrite`` as an
iterator, so the output is never whole in memory either. Memory follows the tile band, not
the image.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from ..data.io import DataError, check_claimed_size, check_tiff_segments
from ..utils.atomic import atomic_path

OUTPUT_TILE = 256
# Decoded input segments kept for re-use by overlapping prediction tiles.
SEGMENT_CACHE_BYTES = 256 * 2**20
# Pixels read to estimate percentile / z-score statistics of a big image.
STATS_PIXELS = 4_000_000
BIGTIFF_BYTES = 2**31


class TiffSource:
    """A lazily read 2D TIFF (first page): a ``RegionSource`` of shape ``(C, H, W)``.

    Works for tiled and stripped TIFFs, compressed or not, with the samples (channels)
    stored together (``planarconfig=contig``, the usual case). Decoded segments are cached up to
    ``cache_bytes`` (at least four segments).
    """

    def __init__(self, path: Union[str, Path], cache_bytes: int = SEGMENT_CACHE_BYTES) -> None:
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            page = self._tif.pages.first
        except Exception as exc:  # noqa: BLE001 - any reader failure is a data error
            raise DataError(f"{self.path}: cannot read this TIFF ({exc}); re-export it as a TIFF") from exc
        if len(self._tif.pages) > 1 or page.imagedepth > 1:
            raise DataError(f"{self.path}: streaming reads single-page 2D TIFFs; this one has several pages")
        if page.planarconfig != 1 and page.samplesperpixel > 1:
            raise DataError(
                f"{self.path}: channels stored as separate planes are not streamed; "
                "re-save with the channels interleaved (planarconfig contig)"
            )
        check_tiff_segments(self.path, [page], self._tif.filehandle.size)
        self._page = page
        self.dtype = page.dtype
        channels = page.samplesperpixel
        self.shape = (channels, page.imagelength, page.imagewidth)
        if page.is_tiled:
            self.segment = (page.tilelength, page.tilewidth)
        else:
            self.segment = (page.rowsperstrip, page.imagewidth)
        check_claimed_size(self.path, (*self.segment, channels), self.dtype)  # one segment is decoded whole
        self._per_row = math.ceil(page.imagewidth / self.segment[1])
        segment_bytes = self.segment[0] * self.segment[1] * channels * self.dtype.itemsize
        self._capacity = max(4, cache_bytes // max(segment_bytes, 1))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def close(self) -> None:
        self._tif.close()

    def __enter__(self) -> TiffSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _segment(self, row: int, col: int) -> np.ndarray:
        """Decoded segment ``(length, width, C)`` (edge segments may be padded)."""
        index = row * self._per_row + col
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        page = self._page
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        fh = self._tif.filehandle
        data = None
        if count > 0:
            fh.seek(offset)
            data = fh.read(count)
        try:
            decoded, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a data error
            raise DataError(f"{self.path}: segment {index} cannot be decoded ({exc}); re-export it") from exc
        if decoded is None:  # empty segment: zeros, as tifffile reads it
            decoded = np.zeros(shape, dtype=self.dtype)
        segment = decoded.reshape(decoded.shape[-3:])
        self._cache[index] = segment
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return segment

    def read(self, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        """The box ``[start, stop)`` of ``(H, W)``, all channels: ``(C, h, w)``."""
        (y0, x0), (y1, x1) = start, stop
        out = np.empty((y1 - y0, x1 - x0, self.shape[0]), dtype=self.dtype)
        sl, sw = self.segment
        for row in range(y0 // sl, (y1 - 1) // sl + 1):
            for col in range(x0 // sw, (x1 - 1) // sw + 1):
                segment = self._segment(row, col)
                ya, yb = max(y0, row * sl), min(y1, (row + 1) * sl)
                xa, xb = max(x0, col * sw), min(x1, (col + 1) * sw)
                out[ya - y0:yb - y0, xa - x0:xb - x0] = segment[ya - row * sl:yb - row * sl,
                                                                xa - col * sw:xb - col * sw]
        return np.moveaxis(out, -1, 0)

    def subsample(self, max_pixels: int = STATS_PIXELS) -> np.ndarray:
        """Every k-th pixel along both axes, ``(C, h, w)``, at most about ``max_pixels`` pixels.

        Read band by band, so statistics of a huge image cost one pass but little memory.
        """
        _, height, width = self.shape
        step = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
        band = max(self.segment[0], step)
        band -= band % step
        parts = [self.read((y, 0), (min(y + band, height), width))[:, ::step, ::step]
                 for y in range(0, height, band)]
        return np.concatenate(parts, axis=1)


def is_streamable_tiff(path: Union[str, Path]) -> bool:
    """True for a single-page 2D TIFF (tiled or stripped) that :class:`TiffSource` can read lazily."""
    try:
        with TiffSource(path):
            return True
    except DataError:
        return False


def rebuffer_bands(
    blocks: Iterable[tuple[int, int, np.ndarray]], height: int, band: int = OUTPUT_TILE
) -> Iterator[np.ndarray]:
    """Re-cut slabs ``(start, stop, (..., rows, W))`` along the rows into bands of ``band`` rows."""
    pending: list[np.ndarray] = []
    rows = 0
    for _, _, block in blocks:
        pending.append(block)
        rows += block.shape[-2]
        while rows >= band:
            joined = np.concatenate(pending, axis=-2)
            yield joined[..., :band, :]
            rest = joined[..., band:, :]
            pending, rows = ([rest] if rest.shape[-2] else []), rest.shape[-2]
    if rows:
        yield np.concatenate(pending, axis=-2)


def tiles_of_bands(bands: Iterable[np.ndarray], width: int, tile: int = OUTPUT_TILE) -> Iterator[np.ndarray]:
    """Split bands ``(rows, W[, S])`` into TIFF tiles ``(rows, tile[, S])``, row-major."""
    for band in bands:
        for x in range(0, width, tile):
            yield np.ascontiguousarray(band[:, x:x + tile])


def write_tiled_tiff(
    path: Union[str, Path],
    bands: Iterable[np.ndarray],
    shape: tuple[int, ...],
    dtype: np.dtype,
    *,
    photometric: str = "minisblack",
    colormap: Optional[np.ndarray] = None,
    tile: int = OUTPUT_TILE,
) -> Path:
    """Write ``(H, W[, S])`` data given as bands of ``tile`` rows to a tiled, zlib-compressed TIFF.

    Atomic: the file appears only when complete. BigTIFF when the raw size passes 2 GiB.
    """
    import tifffile

    path = Path(path)
    raw = math.prod(shape) * np.dtype(dtype).itemsize
    extra = {"colormap": colormap} if colormap is not None else {}
    if len(shape) == 3 and photometric == "minisblack":
        extra["planarconfig"] = "contig"
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, data=tiles_of_bands(bands, shape[1], tile), shape=shape, dtype=dtype,
            tile=(tile, tile), compression="zlib", photometric=photometric,
            bigtiff=raw >= BIGTIFF_BYTES, **extra,
        )
    return path
