"""A corpus of broken and awkward image files, made by the tests themselves (no downloads).

Every command that walks many files is run on it (``predict``, ``evaluate``, ``check-data``, ``train``,
``generate --condition``): no traceback, a non-zero exit when anything failed, each broken file named once
with its reason, and every good file written. :data:`BROKEN` maps each broken file name to a word its
reason must contain; :data:`GOOD` lists the files a 2D one-channel model predicts.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from unetkit.data.io import stem_of

SIZE = (24, 28)

#: Broken file name -> a word (lower case) the failure message must hold.
BROKEN = {
    "empty.png": "empty",
    "truncated.png": "truncated",
    "cut short.tif": "truncated",
    "corrupt tile.tif": "decompress",
    "html page.tif": "cannot be read",
    "archive.png": "cannot be read",
    "notes.jpg": "cannot be read",
    "noise.tiff": "cannot be read",
    "huge.png": "claims",
    "enormous.tif": "claims",
    "nan.tif": "nan",
    "inf.tif": "nan",
    "colour.png": "channel",
    "palette.png": "channel",
    "stack.tif": "3d",
}

#: Files a 2D, one-channel model predicts (a 1x1 image, 16-bit, a non-ASCII name with spaces).
GOOD = ("good.png", "one pixel.png", "sixteen bit.png", "naïve résumé 1.png", "float.tif")


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def tiff_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header (valid CRC) claims ``width`` x ``height`` grey pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def tiff_claiming(width: int, height: int) -> bytes:
    """An uncompressed 8-bit TIFF whose tags claim ``width`` x ``height`` pixels in one strip of 16 bytes."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, width * height)]
    ifd_offset = 8 + 16
    strip_offset = 8
    body = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = strip_offset if tag == 273 else value
        packed = struct.pack("<HHI", tag, kind, 1)
        packed += struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value & 0xFFFFFFFF)
        body += packed
    return b"II*\0" + struct.pack("<I", ifd_offset) + b"\x07" * 16 + body + struct.pack("<I", 0)


def corrupt_tile_tiff() -> bytes:
    """A tiled, zlib-compressed TIFF whose second tile is overwritten with garbage (inside the file)."""
    data = bytearray(tiff_bytes(grey(10, (64, 64)), tile=(32, 32), compression="zlib"))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        offset, count = tif.pages[0].dataoffsets[1], tif.pages[0].databytecounts[1]
    data[offset:offset + count] = b"\x55" * count
    return bytes(data)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.png", b"inside a zip")
    return buffer.getvalue()


def grey(seed: int = 0, shape: tuple[int, int] = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def corpus_files() -> dict[str, bytes]:
    """Every file of the corpus by name: :data:`GOOD` then :data:`BROKEN`."""
    good_png = png_bytes(grey())
    floats = np.random.default_rng(1).random(SIZE).astype(np.float32)
    nan, inf = floats.copy(), floats.copy()
    nan[3, 4] = np.nan
    inf[5, 6] = np.inf
    palette = Image.fromarray(grey(2) % 4).convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    return {
        "good.png": good_png,
        "one pixel.png": png_bytes(np.array([[7]], np.uint8)),
        "sixteen bit.png": png_bytes(grey(3).astype(np.uint16) * 257),
        "naïve résumé 1.png": png_bytes(grey(4)),
        "float.tif": tiff_bytes(floats),
        "empty.png": b"",
        "truncated.png": good_png[: len(good_png) // 2],
        "cut short.tif": tiff_bytes(grey(5, (64, 64)))[:600],
        "corrupt tile.tif": corrupt_tile_tiff(),
        "html page.tif": b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\n",
        "archive.png": zip_bytes(),
        "notes.jpg": b"a text file, not a picture\n",
        "noise.tiff": np.random.default_rng(6).integers(0, 256, 512, dtype=np.uint8).tobytes(),
        "huge.png": png_claiming(2**30, 2**30),
        "enormous.tif": tiff_claiming(2**20, 2**20),
        "nan.tif": tiff_bytes(nan),
        "inf.tif": tiff_bytes(inf),
        "colour.png": png_bytes(np.stack([grey(7), grey(8), grey(9)], axis=-1)),
        "palette.png": buffer.getvalue(),
        "stack.tif": tiff_bytes(np.stack([grey(i) for i in range(5)])),
    }


def write_corpus(folder: Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Write the corpus (or the files ``names`` of it) into ``folder``; return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    files = corpus_files()
    paths = []
    for name in names or tuple(files):
        (folder / name).write_bytes(files[name])
        paths.append(folder / name)
    return paths


#: Masks that are broken, each for a good image of its own: name -> the word its reason holds.
BROKEN_MASKS = {
    "mask empty.png": "empty",
    "mask page.tif": "cannot be read",
    "mask values.png": "grey levels",
    "mask size.png": "differs",
    "mask nan.tif": "nan",
}


def mask_for(name: str) -> np.ndarray:
    """A 0/255 mask the size of the corpus image ``name`` (its top half foreground)."""
    shape = (1, 1) if name == "one pixel.png" else (24, 28)
    mask = np.zeros(shape, np.uint8)
    mask[: shape[0] // 2] = 255
    return mask


def labelled_corpus(root: Path) -> Path:
    """``root/images`` (the corpus) with a good mask for each, and good images with broken masks."""
    write_corpus(root / "images")
    masks = root / "masks"
    masks.mkdir()
    for name in (*GOOD, *BROKEN):
        (masks / f"{stem_of(name)}.png").write_bytes(png_bytes(mask_for(name)))
    files = corpus_files()
    stray = mask_for("good.png")
    stray[0, 0] = 7
    broken = {
        "mask empty.png": b"",
        "mask page.tif": files["html page.tif"],
        "mask values.png": png_bytes(stray),
        "mask size.png": png_bytes(np.zeros((10, 10), np.uint8)),
        "mask nan.tif": files["nan.tif"],
    }
    for name, data in broken.items():
        (root / "images" / f"{stem_of(name)}.png").write_bytes(files["good.png"])
        (masks / name).write_bytes(data)
    return root


def assert_each_named_once(text: str, reasons: dict[str, str]) -> None:
    """Each file of ``reasons`` (name -> a word of its reason) is named on exactly one line of ``text``
    (a command's report), and that line gives the reason."""
    lines = text.splitlines()
    for name, reason in reasons.items():
        hits = [line for line in lines if f"{os.sep}{name}" in line]
        assert len(hits) == 1, f"{name!r} named on {len(hits)} lines of:\n{text}"
        assert reason in hits[0].lower(), f"{name!r}: the reason should mention {reason!r}: {hits[0]}"
