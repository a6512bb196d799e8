"""napari reader of what ``unetkit predict RUN INPUT --out DIR`` writes.

* ``<stem>_prob.tif``: float32 per-class probabilities ``(K, *S)`` -> one Image layer per class
  (class 0, the background, hidden).
* ``<stem>_instances.tif``: object ids ``(*S)`` -> a Labels layer.
* the folder ``DIR`` itself: each ``<stem>.png`` / ``<stem>.tif`` mask beside such a file -> a Labels
  layer of class ids (0/255 binary masks become 0/1, colour masks one id per colour, black 0), then the
  probabilities and objects of every stem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

PROBABILITIES_SUFFIX = "_prob.tif"
INSTANCES_SUFFIX = "_instances.tif"
MASK_SUFFIXES = (".png", ".tif")

LayerData = tuple[np.ndarray, dict[str, Any], str]
PathOrPaths = Union[str, list[str]]


def get_reader(path: PathOrPaths) -> Optional[Callable[[PathOrPaths], list[LayerData]]]:
    """napari's reader hook: :func:`read_predictions` when every path is a prediction file or a folder
    holding some, else ``None`` (another reader may take them)."""
    paths = [path] if isinstance(path, str) else list(path)
    if paths and all(_prediction_files(Path(p)) for p in paths):
        return read_predictions
    return None


def read_predictions(path: PathOrPaths) -> list[LayerData]:
    """Layer data ``(array, kwargs, layer type)`` for prediction files and folders (module doc)."""
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for each in paths:
        for file in _prediction_files(Path(each)):
            layers.extend(_layers_of(file))
    return layers


def _prediction_files(path: Path) -> list[Path]:
    """The files of ``path`` to open, masks first: ``[path]`` for one probabilities or objects file; for
    a folder its masks, probabilities and objects; ``[]`` for anything else."""
    if path.is_file():
        return [path] if path.name.endswith((PROBABILITIES_SUFFIX, INSTANCES_SUFFIX)) else []
    if not path.is_dir():
        return []
    side = sorted((p for p in path.iterdir() if p.name.endswith((PROBABILITIES_SUFFIX, INSTANCES_SUFFIX))),
                  key=lambda p: (_stem(p), p.name.endswith(INSTANCES_SUFFIX)))  # objects above probabilities
    stems = sorted({_stem(p) for p in side})
    masks = [path / f"{stem}{suffix}" for stem in stems for suffix in MASK_SUFFIXES
             if (path / f"{stem}{suffix}").is_file()]
    return masks + side


def _stem(path: Path) -> str:
    for suffix in (PROBABILITIES_SUFFIX, INSTANCES_SUFFIX):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name.rsplit(".", 1)[0]


def _layers_of(path: Path) -> list[LayerData]:
    import tifffile

    from ..data.io import read_label_image

    stem = _stem(path)
    if path.name.endswith(PROBABILITIES_SUFFIX):
        probabilities = tifffile.imread(path)
        classes = probabilities.shape[0]
        kwargs = {
            "name": [f"{stem} probability {k}" for k in range(classes)],
            "channel_axis": 0,
            "contrast_limits": [(0.0, 1.0)] * classes,
            "colormap": "magma",
            "blending": "additive",
            "visible": [k > 0 for k in range(classes)],
        }
        return [(probabilities, kwargs, "image")]
    if path.name.endswith(INSTANCES_SUFFIX):
        return [(read_label_image(path), {"name": f"{stem} objects"}, "labels")]
    return [(mask_to_ids(read_label_image(path)), {"name": f"{stem} classes"}, "labels")]


def mask_to_ids(raw: np.ndarray) -> np.ndarray:
    """A predicted mask as class ids ``(*S)``: ``raw`` ``(*S)`` as written (0/255 binary masks become
    0/1), or an 8-bit colour mask ``(*S, 3)`` numbered by colour (black 0, the others 1, 2... in
    colour order)."""
    if raw.ndim >= 3 and raw.shape[-1] == 3 and raw.dtype == np.uint8:
        colors, ids = np.unique(raw.reshape(-1, 3), axis=0, return_inverse=True)
        ids = ids.reshape(raw.shape[:-1])
        if colors[0].any():  # no black: ids from 1
            ids = ids + 1
        return ids.astype(np.uint8 if len(colors) < 256 else np.int32)
    values = np.unique(raw)
    if values.size and set(values.tolist()) <= {0, 255}:
        return (raw == 255).astype(np.uint8)
    return raw
