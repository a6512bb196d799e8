"""A napari layer's array through a :class:`~unetkit.inference.Predictor`: the glue of the Predict widget.

A layer holds ``(*L, *S)`` (grey), ``(*L, *S, 3|4)`` (RGB(A)) or ``(*L, C, *S)`` (``C`` the model's
input channels), ``S`` the model's 2 or 3 spatial axes and ``L`` any leading axes (time, a stack of
2D planes...), which are predicted one plane (or volume) at a time. The Predictor does the work;
this module only slices, reports progress (tiles done, through forward hooks on the network) and
stops between tiles when asked. Neither napari nor Qt is needed here.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
from torch import nn

from ..inference import Predictor
from ..inference.files import convert_channels, default_classes
from ..inference.tta import symmetries
from ..instances import default_instance_method, instance_config_for, instances_from_probabilities

#: The backend that runs an exported file, by its suffix (a folder is a RUN folder, run by torch; a
#: ``.zip`` a bioimage.io package that unetkit wrote, run by torch from its state dict).
BACKENDS_BY_SUFFIX = {".onnx": "onnxruntime", ".pt": "torchscript", ".zip": "torch"}

Progress = Callable[[int, int], None]
"""``progress(done, total)``: tiles done of ``total`` (``total`` 0: not known in advance)."""


class PredictionCancelled(Exception):
    """Raised out of :func:`predict_layer` when its ``cancel`` event is set."""


def load_predictor(
    source: Union[str, Path], *, tile_size: Optional[int] = None, tta: bool = False,
    device: Optional[str] = None,
) -> Predictor:
    """The Predictor of a RUN folder (torch) or of a file of ``unetkit export`` (``.onnx``: ONNX
    Runtime, ``.torchscript.pt``: TorchScript, ``.zip``: a bioimage.io package); ``tile_size`` ``None``:
    chosen for speed within the memory budget. A RUN folder runs in PyTorch, in the run's precision, so
    that the progress follows its tiles."""
    from ..export import predictor_for

    path = Path(source)
    if path.is_dir():
        backend = "torch"
    elif path.suffix in BACKENDS_BY_SUFFIX and path.is_file():
        backend = BACKENDS_BY_SUFFIX[path.suffix]
    else:
        raise FileNotFoundError(
            f"{path} is neither a RUN folder of `unetkit train` nor a file of `unetkit export` (.onnx, .pt, "
            ".zip)"
        )
    return predictor_for(path, backend, tile_size=tile_size, tta=tta, device=device)


def instance_method(predictor: Predictor) -> Optional[str]:
    """The route that separates the objects of this run's predictions
    (:func:`~unetkit.instances.default_instance_method`), or ``None``: a restoration run, or a
    multi-class run without an object route (the watershed route needs a binary foreground)."""
    if predictor.task != "segmentation":
        return None
    classes = predictor.classes or default_classes(predictor.num_classes)
    method = default_instance_method(predictor.target, classes.names, predictor.membrane_class)
    return method if method != "watershed" or predictor.num_classes == 2 else None


def describe(predictor: Predictor) -> str:
    """One line saying what the run does, for the widget: ``"2D segmentation (1 input channel), ..."``."""
    plural = "s" if predictor.in_channels > 1 else ""
    head = f"{predictor.dims}D {predictor.task} ({predictor.in_channels} input channel{plural})"
    if predictor.task == "restoration":
        return head + (f", {predictor.scale}x super-resolution" if predictor.scale > 1 else ", same size out")
    classes = predictor.classes or default_classes(predictor.num_classes)
    method = instance_method(predictor)
    objects = f"objects by {method}" if method else "no object route"
    return f"{head}, classes: {', '.join(classes.names)}; {objects}"


@dataclass(frozen=True)
class LayerLayout:
    """Where things are in a layer's array: ``lead`` (the shape of the axes predicted one at a time),
    ``channel_axis`` (the axis of the channels, ``None`` for a grey layer) and ``spatial``."""

    lead: tuple[int, ...]
    channel_axis: Optional[int]
    spatial: tuple[int, ...]

    @property
    def planes(self) -> int:
        return math.prod(self.lead)


def layer_layout(shape: tuple[int, ...], rgb: bool, dims: int, in_channels: int) -> LayerLayout:
    """The :class:`LayerLayout` of a layer of ``shape`` (``rgb``: the last axis is colour) for a network
    of ``dims`` spatial axes taking ``in_channels``; ``ValueError`` when it does not fit."""
    shape = tuple(int(n) for n in shape)
    spatial_end = len(shape) - 1 if rgb else len(shape)
    if spatial_end < dims:
        raise ValueError(f"a {dims}D model needs a layer with {dims} spatial axes, got shape {shape}")
    first = spatial_end - dims
    if rgb:
        channel_axis: Optional[int] = len(shape) - 1
        lead = shape[:first]
    elif in_channels > 1 and first > 0 and shape[first - 1] == in_channels:
        channel_axis = first - 1
        lead = shape[:channel_axis]
    elif in_channels in (1, 3):  # a grey layer; a 3-channel model gets it repeated
        channel_axis, lead = None, shape[:first]
    else:
        raise ValueError(
            f"the model takes {in_channels} channels: give a layer whose axis before the {dims} spatial "
            f"ones has {in_channels} entries, got shape {shape}"
        )
    return LayerLayout(lead, channel_axis, shape[first:spatial_end])


def plane_of(data: np.ndarray, layout: LayerLayout, index: tuple[int, ...]) -> np.ndarray:
    """The channel-first image ``(C, *S)`` at leading ``index`` of a layer's ``data``."""
    plane = np.asarray(data[index])
    if layout.channel_axis is None:
        return plane[None]
    return np.moveaxis(plane, layout.channel_axis - len(layout.lead), 0)


@dataclass
class LayerPrediction:
    """The result for a layer of leading shape ``L`` and spatial shape ``S``.

    Segmentation: ``labels`` class ids ``(*L, *S)`` (uint8 up to 256 classes, else int32) and, when
    asked, ``instances`` object ids ``(*L, *S)`` uint32 (numbered per plane). Restoration:
    ``restored`` float32 ``(*L, C, *S * scale)`` on the input's intensity scale.
    """

    task: str
    layout: LayerLayout
    labels: Optional[np.ndarray] = None
    instances: Optional[np.ndarray] = None
    restored: Optional[np.ndarray] = None
    scale: int = 1


def tiles_per_plane(predictor: Predictor, spatial: tuple[int, ...]) -> int:
    """Network tiles (forward passes of single tiles) one plane of ``spatial`` shape takes; 0 when the
    run predicts at an object scale (a second pass at a size known only after the first)."""
    if predictor.object_diameter is not None:
        return 0
    shape = tuple(n * predictor.scale for n in spatial)
    plan, _ = predictor.plan(shape)
    return len(plan) * (len(symmetries(predictor.dims)) if predictor.tta else 1)


@contextmanager
def watch_tiles(
    model: object, on_tiles: Callable[[int], None], cancel: Optional[threading.Event]
) -> Iterator[None]:
    """Forward hooks on a torch ``model`` for the duration: ``on_tiles(n)`` after each batch of ``n``
    tiles, :class:`PredictionCancelled` before the next batch once ``cancel`` is set. An exported
    model is not a torch module: nothing is hooked (it stops between planes only)."""
    if not isinstance(model, nn.Module):
        yield
        return

    def before(_module: nn.Module, args: tuple) -> None:
        if cancel is not None and cancel.is_set():
            raise PredictionCancelled()

    def after(_module: nn.Module, args: tuple, _output: object) -> None:
        on_tiles(int(args[0].shape[0]))

    handles = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def predict_layer(
    predictor: Predictor,
    data: np.ndarray,
    *,
    rgb: bool = False,
    instances: bool = False,
    progress: Optional[Progress] = None,
    cancel: Optional[threading.Event] = None,
) -> LayerPrediction:
    """Predict every plane of a layer's ``data`` (module doc for the layouts; ``rgb``: napari's
    ``layer.rgb``). ``instances``: also separate the objects (:func:`instance_method` must not be
    ``None``). ``progress(done, total)`` is called from this thread as tiles (or planes) finish;
    setting ``cancel`` stops the work before the next tile with :class:`PredictionCancelled`."""
    layout = layer_layout(np.shape(data), rgb, predictor.dims, predictor.in_channels)
    method = instance_method(predictor) if instances else None
    if instances and method is None:
        raise ValueError("this run has no object route: its objects cannot be separated")
    per_plane = tiles_per_plane(predictor, layout.spatial)
    # Tiles are counted through hooks on a torch network whose tiles are known in advance; otherwise
    # (an exported network, a run at an object scale) progress goes by plane.
    by_tiles = per_plane > 0 and isinstance(predictor.model, nn.Module)
    total = per_plane * layout.planes if by_tiles else layout.planes
    done = 0

    def count(tiles: int) -> None:
        nonlocal done
        done += tiles
        if by_tiles and progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    result = LayerPrediction(predictor.task, layout, scale=predictor.scale)
    with watch_tiles(predictor.prediction_network(), count, cancel):
        for number, index in enumerate(np.ndindex(*layout.lead)):
            if cancel is not None and cancel.is_set():
                raise PredictionCancelled()
            image = plane_of(data, layout, index)
            if predictor.task == "restoration":
                _store(result, "restored", index, layout.lead, predictor.restore(image))
            else:
                _segment_plane(predictor, image, index, result, method)
            if not by_tiles and progress is not None:
                progress(number + 1, total)
    return result


def _segment_plane(
    predictor: Predictor, image: np.ndarray, index: tuple[int, ...], result: LayerPrediction,
    method: Optional[str],
) -> None:
    if image.shape[0] != predictor.in_channels:
        image = convert_channels(image, "gray" if predictor.in_channels == 1 else "rgb")
    probabilities = predictor.predict_proba(image)
    labels = predictor.labels(probabilities)
    dtype = np.uint8 if predictor.num_classes <= 256 else np.int32
    _store(result, "labels", index, result.layout.lead, labels.astype(dtype))
    if method is not None:
        classes = predictor.classes or default_classes(predictor.num_classes)
        config = instance_config_for(predictor.target, classes.names, predictor.membrane_class, method)
        objects = instances_from_probabilities(probabilities, config, predictor.target)
        _store(result, "instances", index, result.layout.lead, objects.astype(np.uint32))


def _store(result: LayerPrediction, name: str, index: tuple[int, ...], lead: tuple[int, ...],
           plane: np.ndarray) -> None:
    """Put one plane's array at ``index`` of the stacked result ``name`` (made at the first plane)."""
    stacked = getattr(result, name)
    if stacked is None:
        stacked = np.zeros(lead + plane.shape, dtype=plane.dtype)
        setattr(result, name, stacked)
    stacked[index] = plane
