"""Benchmark image pairs for restoration (denoising, super-resolution), made from folders of clean images.

Importable by the benchmark scripts (``from restoration_sets import noisy_pairs``, with ``benchmarks/`` on
``sys.path`` as it is for a script run from there). The degradations are unetkit's own
(:mod:`unetkit.data.degrade`), so the benchmark protocol is the one unetkit trains and scores with:

- ``noisy_pairs``: ``inputs/<stem>.tif`` = clean + Gaussian noise of ``sigma`` (0-255 scale; float32, not
  clipped; noise from ``image_rng(stem, seed)``), ``targets/<stem>.png`` = the clean image (uint8);
- ``noisy_images``: the noisy float32 TIFFs only, ``<stem>.tif`` (Noise2Void trains on noisy images alone);
- ``sr_pairs``: ``inputs/<stem>.png`` = bicubic ``downscale`` of the modcropped HR image, rounded and clipped
  to uint8 as the literature saves LR images, ``targets/<stem>.png`` = the modcropped HR image (uint8, RGB).
  A grey HR image (Set14's ``bridge``) is made RGB (R = G = B) first, as Python readers of the set do
  (Pillow ``convert("RGB")``, OpenCV ``imread``), so it is scored on BT.601 Y = 16 + 219/255 * grey like the
  others. Bicubic x2 / x3 / x4 on Set14 then scores 30.33 / 27.63 / 26.09 dB, the shared README's figures
  (30.32 / 27.63 / 26.09, measured with Pillow's 8-bit resize, which rounds between its two passes). Scoring a
  grey image on its own values (``grey_as_rgb=False``, as MATLAB scripts that skip ``rgb2ycbcr`` for 2D
  images do) gives 30.24 / 27.54 / 26.00, near the published MATLAB figures 30.24 / 27.55 / 26.00.

A folder that is already complete (a manifest with the same parameters and every file present) is left as
it is; every file is written atomically. Build the Set12 / Set14 sets by hand with e.g.::

    python benchmarks/restoration_sets.py noisy ../shared/data/restoration/set12 bench_out/s12_25 --sigma 25
    python benchmarks/restoration_sets.py sr ../shared/data/restoration/set14 bench_out/set14_x4 --scale 4
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from unetkit.data.degrade import downscale, image_rng, modcrop, parse_noise
from unetkit.data.io import list_images, read_image, stem_of
from unetkit.utils.atomic import atomic_path, atomic_write_json

PathLike = Union[str, "os.PathLike[str]"]
MANIFEST = ".manifest.json"


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write a uint8 ``(C, H, W)`` image (C = 1 or 3) as PNG, atomically."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"{path}: expected a uint8 (1|3, H, W) image, got {image.dtype} {image.shape}")
    pixels = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")
    return path


def write_float_tiff(path: Path, image: np.ndarray) -> Path:
    """Write a ``(C, H, W)`` image as a float32 TIFF that ``read_image`` reads back as ``(C, H, W)``."""
    import tifffile

    data = np.asarray(image, dtype=np.float32)
    with atomic_path(path) as tmp:
        if data.shape[0] == 1:
            tifffile.imwrite(tmp, data[0], photometric="minisblack")
        else:
            tifffile.imwrite(tmp, data, photometric="minisblack", planarconfig="separate",
                             metadata={"axes": "CYX"})
    return path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip to uint8 (as MATLAB's ``im2uint8`` on 0-255 data)."""
    return np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)


def read_uint8(path: Path) -> np.ndarray:
    """A clean 8-bit image, ``(C, H, W)`` uint8."""
    image = read_image(path)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"{path}: expected an 8-bit 2D image, got {image.dtype} {image.shape}")
    return image


def _build(out_dir: Path, sources: list[Path], params: dict[str, Any], outputs: dict[str, str],
           make: Callable[[Path, Path], None]) -> Path:
    """Run ``make(source, out_dir)`` for every source unless ``out_dir`` is complete for ``params``.

    ``outputs`` maps each source's stem to the file names (relative to ``out_dir``, ``|``-separated)
    it must leave behind; the manifest is written last, so a half-built folder is rebuilt.
    """
    manifest_path = out_dir / MANIFEST
    expected = {stem: names.split("|") for stem, names in outputs.items()}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = None
        if (manifest == {"params": params, "stems": sorted(expected)}
                and all((out_dir / n).is_file() for names in expected.values() for n in names)):
            return out_dir
        manifest_path.unlink()
    for source in sources:
        make(source, out_dir)
    atomic_write_json(manifest_path, {"params": params, "stems": sorted(expected)})
    return out_dir


def _noisy(clean: np.ndarray, stem: str, sigma: float, seed: int) -> np.ndarray:
    return parse_noise(f"gaussian:{sigma:g}").apply(clean, image_rng(stem, seed), data_max=255.0)


def noisy_pairs(clean_dir: PathLike, out_dir: PathLike, sigma: float, seed: int = 0) -> Path:
    """Denoising pairs: ``inputs/<stem>.tif`` (float32, clean + N(0, sigma^2), not clipped) and
    ``targets/<stem>.png`` (the clean uint8 image). Returns ``out_dir``."""
    sources, out = list_images(clean_dir), Path(out_dir)
    outputs = {stem_of(p): f"inputs/{stem_of(p)}.tif|targets/{stem_of(p)}.png" for p in sources}

    def make(source: Path, root: Path) -> None:
        stem, clean = stem_of(source), read_uint8(source)
        write_float_tiff(root / "inputs" / f"{stem}.tif", _noisy(clean, stem, sigma, seed))
        write_png(root / "targets" / f"{stem}.png", clean)

    params = {"kind": "noisy_pairs", "source": str(Path(clean_dir).resolve()), "sigma": sigma, "seed": seed}
    return _build(out, sources, params, outputs, make)


def noisy_images(clean_dir: PathLike, out_dir: PathLike, sigma: float, seed: int = 0) -> Path:
    """Noisy images only: ``<stem>.tif`` (float32, as the inputs of :func:`noisy_pairs`).
    Returns ``out_dir``."""
    sources, out = list_images(clean_dir), Path(out_dir)
    outputs = {stem_of(p): f"{stem_of(p)}.tif" for p in sources}

    def make(source: Path, root: Path) -> None:
        stem = stem_of(source)
        write_float_tiff(root / f"{stem}.tif", _noisy(read_uint8(source), stem, sigma, seed))

    params = {"kind": "noisy_images", "source": str(Path(clean_dir).resolve()), "sigma": sigma, "seed": seed}
    return _build(out, sources, params, outputs, make)


def sr_pairs(hr_dir: PathLike, out_dir: PathLike, scale: int, *, grey_as_rgb: bool = True) -> Path:
    """Super-resolution pairs: ``inputs/<stem>.png`` (bicubic x1/scale of the modcropped HR image, rounded
    to uint8) and ``targets/<stem>.png`` (the modcropped HR image, uint8). Grey HR images are made RGB
    unless ``grey_as_rgb`` is false (see the module docstring). Returns ``out_dir``."""
    sources, out = list_images(hr_dir), Path(out_dir)
    outputs = {stem_of(p): f"inputs/{stem_of(p)}.png|targets/{stem_of(p)}.png" for p in sources}

    def make(source: Path, root: Path) -> None:
        stem, hr = stem_of(source), modcrop(read_uint8(source), scale)
        if grey_as_rgb and hr.shape[0] == 1:
            hr = np.repeat(hr, 3, axis=0)
        write_png(root / "inputs" / f"{stem}.png", to_uint8(downscale(hr, scale)))
        write_png(root / "targets" / f"{stem}.png", np.ascontiguousarray(hr))

    params = {"kind": "sr_pairs", "source": str(Path(hr_dir).resolve()), "scale": scale,
              "grey_as_rgb": grey_as_rgb}
    return _build(out, sources, params, outputs, make)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("noisy", "noisy-images"):
        p = sub.add_parser(name)
        p.add_argument("clean_dir", type=Path)
        p.add_argument("out_dir", type=Path)
        p.add_argument("--sigma", type=float, required=True, help="noise sigma on the 0-255 scale")
        p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("sr")
    p.add_argument("hr_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--scale", type=int, required=True)
    args = parser.parse_args()
    if args.what == "noisy":
        print(noisy_pairs(args.clean_dir, args.out_dir, args.sigma, args.seed))
    elif args.what == "noisy-images":
        print(noisy_images(args.clean_dir, args.out_dir, args.sigma, args.seed))
    else:
        print(sr_pairs(args.hr_dir, args.out_dir, args.scale))


if __name__ == "__main__":
    main()
