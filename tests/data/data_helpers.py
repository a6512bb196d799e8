"""Small writers for the data tests (every file is made in ``tmp_path``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def save_tif(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, **kwargs)
    return path


def make_dataset(root: Path, masks: list[np.ndarray], images: list[np.ndarray] | None = None,
                 suffix: str = ".png") -> Path:
    """``root/images/im_i.png`` (random uint8 unless given) and ``root/masks/im_i<suffix>``."""
    rng = np.random.default_rng(0)
    for i, mask in enumerate(masks):
        shape = mask.shape[:2]
        image = images[i] if images is not None else rng.integers(0, 255, size=shape, dtype=np.uint8)
        save_png(root / "images" / f"im_{i}.png", image)
        if suffix in (".tif", ".tiff"):
            save_tif(root / "masks" / f"im_{i}{suffix}", mask)
        else:
            save_png(root / "masks" / f"im_{i}{suffix}", mask)
    return root


def binary_masks(n: int = 3, size: int = 24) -> list[np.ndarray]:
    out = []
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        mask[4 + i : 14 + i, 5:15] = 255
        out.append(mask)
    return out
