"""The :class:`Predictor`: a trained network applied to images of any size, tile by tile."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..activation import (
    expand_binary,
    foreground_and_maps,
    logits_to_probabilities,
    num_output_classes,
    probabilities_to_labels,
)
from ..checkpoint import load_model
from ..data.instances import MAP_TARGETS, TARGETS, map_channels, to_data_labels
from ..precision import inference_dtype, precision_name, prediction_precision
from .agreement import MIN_AGREEMENT, read_agreement
from .low_precision import LowPrecisionNetwork
from .memory import auto_tile_and_batch, memory_budget
from .tiling import BLEND_MODES, ArraySource, RegionSource, blend_tiles, blend_window, plan_tiles
from .tta import symmetries

CLASSES_FILE = "classes.json"
CONFIG_FILE = "config.json"
DEFAULT_OVERLAP = 0.25
PREDICTOR_TASKS = ("segmentation", "restoration")
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}

TileSize = Union[int, Sequence[int], None]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """Apply a trained network to images of any size: segment them, or restore them.

    Args:
        model_or_run: a network from :mod:`unetkit.models` or a RUN folder (see :meth:`from_run`).
        tile_size: input tile edge (one int for every axis, or one per axis); ``None`` picks, per
            image, the tile that computes the fewest voxels within ``max_memory``
            (:func:`~unetkit.inference.memory.auto_tile_and_batch`). Rounded down to a size the network
            accepts.
        overlap: same-padding nets only: the overlap of neighbouring tiles, a fraction of the
            tile below 1 (MONAI's convention) or pixels from 1 up; default 0.25. Valid-padding
            nets always use the paper's overlap-tile strategy and need no overlap.
        tta: average the predictions over flips and 90-degree rotations (:mod:`.tta`).
        batch_size: tiles per forward pass; ``None``: 1 on the CPU, as many as fit on a GPU.
        max_memory: bytes a prediction may hold for activations, tiles and blending buffers (and a
            streamed TIFF's segment cache); ``None``: 1 GiB or a quarter of the free memory, whichever is
            less (:func:`~unetkit.inference.memory.memory_budget`).
        device: ``"cpu"``, ``"cuda"``...; default: where the model is (for a RUN folder: CUDA
            when available). The model is moved there.
        normalize: a ``NormalizeConfig`` applied to every image before prediction; ``None``
            means the images are already normalised float arrays.
        blend: same-padding nets: ``"gaussian"`` (default), ``"linear"`` or ``"constant"``.
        sigma_scale: Gaussian window sigma as a fraction of the tile (0.125, as MONAI).
        classes: the ``ClassInfo`` of the training data (names, colours, mask encoding).
        progress: show a progress bar over the tiles of each image.
        object_diameter: the median object diameter (px) the network was trained at
            (``data.object_diameter``); each image is then predicted at that object scale
            (:func:`~unetkit.data.scale.predict_at_object_scale`: two passes). ``None``: as is.
        max_pixels: with ``object_diameter``: the most pixels (voxels) the image may have once
            resized to the object scale (up to 4x per axis), else ``ScaleLimitError`` (a ``ValueError``);
            ``None``: no limit.
        target: what the network was trained to output (``data.target``): ``"semantic"`` (the
            classes of ``classes``), ``"three_class"`` (background / interior / border, whose
            :meth:`labels` are the dataset's background / foreground), ``"flows"`` (foreground and
            a flow field: :meth:`predict_proba` gives background, foreground, then the ``D`` flow
            components, see :mod:`unetkit.flows`) or ``"distance"`` (background, foreground, then the
            distance to the object's outline, 0-1).
        task: ``"segmentation"`` (default: outputs are logits, :meth:`predict` gives labels) or
            ``"restoration"`` (outputs are images, :meth:`predict` gives the restored image in the
            input's intensity scale, see :mod:`.restore`).
        scale: restoration: output pixels per input pixel along each axis (super-resolution).
        membrane_class: the class that outlines the objects as a thin network (``data.membrane_class``,
            EM data): objects then take the membrane route
            (:func:`unetkit.instances.default_instance_method`).
        precision: the arithmetic of the network's forward pass (:func:`unetkit.precision.inference_dtype`):
            ``"auto"`` (default; for a RUN folder: the precision it was trained with, when that was
            ``"fp32"`` or ``"bf16"``), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (the network then runs as a
            copy with its weights in that type: :mod:`~unetkit.inference.low_precision`). Outputs,
            blending and all that follows stay float32. Exported networks (ONNX Runtime, TorchScript)
            compute in float32.
        label_agreement: the measured share of labels the network keeps in bfloat16
            (:mod:`~unetkit.inference.agreement`; a RUN folder's ``precision.json``): below
            :data:`~unetkit.inference.agreement.MIN_AGREEMENT`, ``"auto"`` stays float32. ``None``: not
            measured, the hardware decides.
        compiled: run the network through ``torch.compile`` (PyTorch networks only): the first tiles
            wait for the compilation (10-40 s on a 2-core CPU), then it is 1.3-1.7x faster there
            (BENCHMARKS.md, issue 16); pays for big images and many files.

    Arrays go in channel-first: ``(H, W)`` or ``(C, H, W)`` for a 2D network, ``(D, H, W)``
    or ``(C, D, H, W)`` for a 3D one. The network runs in eval mode and is put back in the
    mode it was in afterwards, so a training loop can validate with a Predictor.
    """

    def __init__(
        self,
        model_or_run: Union[nn.Module, str, Path],
        *,
        tile_size: TileSize = None,
        overlap: Optional[float] = None,
        tta: bool = False,
        batch_size: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
        normalize: Any = None,
        blend: str = "gaussian",
        sigma_scale: float = 0.125,
        classes: Any = None,
        progress: bool = False,
        object_diameter: Optional[float] = None,
        target: Optional[str] = None,
        task: Optional[str] = None,
        scale: Optional[int] = None,
        max_pixels: Optional[int] = None,
        membrane_class: Optional[int] = None,
        precision: Optional[str] = None,
        max_memory: Optional[int] = None,
        label_agreement: Optional[float] = None,
        compiled: bool = False,
    ) -> None:
        if isinstance(model_or_run, (str, Path)):
            run = Predictor.from_run(model_or_run)
            model_or_run = run.model
            normalize = run.normalize if normalize is None else normalize
            classes = run.classes if classes is None else classes
            object_diameter = run.object_diameter if object_diameter is None else object_diameter
            target = run.target if target is None else target
            task = run.task if task is None else task
            scale = run.scale if scale is None else scale
            membrane_class = run.membrane_class if membrane_class is None else membrane_class
            precision = run.precision_setting if precision is None else precision
            label_agreement = run.label_agreement if label_agreement is None else label_agreement
        if object_diameter is not None and object_diameter <= 0:
            raise ValueError(f"object_diameter must be a positive number of pixels, got {object_diameter}")
        if blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
        if overlap is not None and overlap < 0:
            raise ValueError(f"overlap must be >= 0 (a fraction below 1, or pixels), got {overlap}")
        if max_memory is not None and max_memory <= 0:
            raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else model_device(model_or_run)
        self.model = model_or_run.to(self.device)
        self.dims = self.model.spatial_dims
        self.tile_size = self._tile_tuple(tile_size)
        self.overlap = DEFAULT_OVERLAP if overlap is None else float(overlap)
        self.tta = tta
        self.batch_size = batch_size
        self.max_memory = max_memory
        self.normalize = normalize
        self.blend = "constant" if self.model.context() > 0 else blend
        self.sigma_scale = sigma_scale
        self.classes = classes
        self.progress = progress
        self.object_diameter = object_diameter
        self.max_pixels = max_pixels
        self.membrane_class = membrane_class
        self.target = target or "semantic"
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.task = task or "segmentation"
        if self.task not in PREDICTOR_TASKS:
            raise ValueError(f"task must be one of {PREDICTOR_TASKS}, got {task!r}")
        self.scale = int(scale or 1)
        if self.scale < 1 or (self.scale > 1 and self.task != "restoration"):
            raise ValueError(f"scale must be 1, or >= 1 for a restoration network; got {scale}")
        self.backend_choice = None  # set by backend="auto" (unetkit.inference.backend_choice)
        self._network: Optional[tuple[tuple, nn.Module]] = None
        self._network_lock = threading.Lock()
        self.label_agreement = label_agreement
        if compiled and not isinstance(self.model, nn.Module):
            raise ValueError(f"compiled needs the torch backend: {self.model!r} is an exported network")
        self.compiled = compiled
        self.precision_setting = precision or "auto"
        self.compute_dtype = self._compute_dtype(self.precision_setting)
        self._activate = logits_to_probabilities if self.task == "segmentation" else _identity
        if self.target in MAP_TARGETS and self.task == "segmentation":
            self._activate = foreground_and_maps

    @classmethod
    def from_run(cls, run_dir: Union[str, Path], **kwargs: Any) -> Predictor:
        """A predictor for a RUN folder written by ``unetkit train``.

        Reads the network (``model.json`` + ``model.safetensors``), ``classes.json`` (the
        ``ClassInfo``) and ``config.json["data"]`` (its ``normalize``, ``object_diameter``, ``target``
        and ``membrane_class``), the training precision and ``precision.json`` (the measured
        ``label_agreement``) when they are there. Keyword arguments go to :class:`Predictor`.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(
                f"{run_dir} is not a folder: give the RUN folder written by `unetkit train` "
                "(it holds model.json and model.safetensors)"
            )
        config_path = run_dir / CONFIG_FILE
        config = _read_json(config_path) if config_path.is_file() else {}
        if config.get("task") == "generation":
            raise ValueError(
                f"{run_dir} is a generation run: it draws images from noise rather than predicting from "
                f"an image; use `unetkit generate {run_dir} --out DIR` (Python: Run.load(...).sampler())"
            )
        model = load_model(run_dir)
        if kwargs.get("device") is None:
            kwargs["device"] = default_device()
        classes_path = run_dir / CLASSES_FILE
        if classes_path.is_file() and kwargs.get("classes") is None:
            from ..data.classes import ClassInfo

            try:
                kwargs["classes"] = ClassInfo.from_dict(_read_json(classes_path))
            except (KeyError, TypeError) as exc:
                raise ValueError(
                    f"{classes_path} is not a class list of `unetkit train` ({type(exc).__name__}: {exc}); "
                    "copy it again from the RUN folder it came from"
                ) from exc
        data = config.get("data", {})
        if kwargs.get("normalize") is None and data.get("normalize") is not None:
            from ..data.normalize import NormalizeConfig

            kwargs["normalize"] = NormalizeConfig.from_dict(data["normalize"])
        if kwargs.get("object_diameter") is None:
            kwargs["object_diameter"] = data.get("object_diameter")
        if kwargs.get("target") is None:
            kwargs["target"] = data.get("target")
        if kwargs.get("membrane_class") is None:
            kwargs["membrane_class"] = data.get("membrane_class")
        if kwargs.get("task") is None:
            kwargs["task"] = config.get("task")
        if kwargs.get("precision") is None:
            kwargs["precision"] = prediction_precision(config.get("precision"))
        if kwargs.get("label_agreement") is None:
            kwargs["label_agreement"] = read_agreement(run_dir)
        if kwargs.get("scale") is None and kwargs["task"] == "restoration":
            kwargs["scale"] = config.get("restoration", {}).get("scale")
        return cls(model, **kwargs)

    def _compute_dtype(self, precision: str) -> Optional[torch.dtype]:
        dtype = inference_dtype(self.device, precision, self.task)
        measured = self.label_agreement
        if precision == "auto" and measured is not None and measured < MIN_AGREEMENT:
            return None
        if dtype is None or isinstance(self.model, nn.Module):
            return dtype
        if precision != "auto":
            raise ValueError(
                f"precision {precision!r} needs the torch backend: an exported network "
                f"({self.model!r}) computes in float32; use --backend torch or --precision fp32"
            )
        return None

    @property
    def backend(self) -> str:
        """What runs the network: ``"torch"``, ``"onnxruntime"`` or ``"torchscript"``."""
        return "torch" if isinstance(self.model, nn.Module) else self.model.kind

    @property
    def precision(self) -> str:
        """The arithmetic the network runs in: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return precision_name(self.compute_dtype)

    # ----------------------------------------------------------------- shapes
    def _tile_tuple(self, tile_size: TileSize) -> Optional[tuple[int, ...]]:
        if tile_size is None:
            return None
        if isinstance(tile_size, (int, np.integer)):
            tile_size = (int(tile_size),) * self.dims
        sizes = tuple(int(s) for s in tile_size)
        if len(sizes) != self.dims or min(sizes) < 1:
            raise ValueError(f"tile_size must be a positive int or {self.dims} ints, got {tile_size!r}")
        return sizes

    @property
    def in_channels(self) -> int:
        return self.model.config.in_channels

    @property
    def num_classes(self) -> int:
        """Classes in the output of :meth:`predict_proba` (2 for a one-channel binary head or a flows
        or distance network)."""
        if self.target in MAP_TARGETS:
            return 2
        return num_output_classes(self.model.config.num_classes)

    @property
    def output_channels(self) -> int:
        """Channels of the blocks :meth:`iter_proba` yields: the network's, one more for a flows or
        distance network (its foreground logit becomes the background and foreground probabilities)."""
        return self.model.config.num_classes + int(self.target in MAP_TARGETS)

    @property
    def proba_channels(self) -> int:
        """Channels of :meth:`predict_proba`: the classes, then a flows or distance network's maps."""
        return self.num_classes + map_channels(self.target, self.dims)

    def as_channels_first(self, image: np.ndarray) -> np.ndarray:
        """``(*S)`` or ``(C, *S)`` -> ``(C, *S)``; raise ``ValueError`` saying what the model takes."""
        image = np.asarray(image)
        if image.ndim == self.dims:
            image = image[None]
        if image.ndim != self.dims + 1:
            layouts = "(D, H, W) or (C, D, H, W)" if self.dims == 3 else "(H, W) or (C, H, W)"
            raise ValueError(f"a {self.dims}D network takes {layouts} arrays, got shape {image.shape}")
        if image.shape[0] != self.in_channels:
            raise ValueError(channel_mismatch_message(image.shape[0], self.in_channels))
        return image

    def check_channels(self, channels: int) -> None:
        """Raise the ``ValueError`` of :func:`channel_mismatch_message` if ``channels`` is wrong."""
        if channels != self.in_channels:
            raise ValueError(channel_mismatch_message(channels, self.in_channels))

    # ------------------------------------------------------------- prediction
    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Per-class probabilities, float32 ``(K, *S)`` (``K = 2`` for a binary one-channel head)."""
        image = self.as_channels_first(image)
        if self.normalize is not None:
            image = self._normalize(image)
        image = np.ascontiguousarray(image, dtype=np.float32)
        if self.object_diameter is not None:
            from ..data.scale import predict_at_object_scale

            return predict_at_object_scale(
                self._predict_normalized, image, self.object_diameter, max_pixels=self.max_pixels,
                classes=self.num_classes,
            )
        return self._predict_normalized(image)

    def _predict_normalized(self, image: np.ndarray) -> np.ndarray:
        """``(K, *S)`` probabilities of a normalised float32 ``(C, *S)`` image at its own scale
        (a restoration network: its ``(C, *S)`` output image, normalised as the input)."""
        probs = np.empty((self.output_channels, *image.shape[1:]), dtype=np.float32)
        for start, stop, block in self.iter_proba(ArraySource(image)):
            probs[:, start:stop] = block
        return expand_binary(probs) if self.task == "segmentation" else probs

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Segmentation: class ids of the training data's classes, int64 ``(*S)`` (see :meth:`labels`).
        Restoration: the restored image, float32 ``(C, *S * scale)`` (see :meth:`restore`)."""
        if self.task == "restoration":
            return self.restore(image)
        return self.labels(self.predict_proba(image))

    def restore(self, image: np.ndarray) -> np.ndarray:
        """A restoration network's output for ``(*S)`` or ``(C, *S)``: float32 ``(C, *S * scale)`` on the
        input's intensity scale (:func:`~unetkit.inference.restore.restore_array`; an RGB image given
        to a grey-level network is restored through its luminance)."""
        from .restore import restore_array

        return restore_array(self, image)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """``(K, *S)`` probabilities -> int64 class ids ``(*S)`` of the training data's classes:
        the network's classes (:meth:`labels_from_blocks`; a flows network's flow channels play no
        part), mapped back to the dataset's for a ``three_class`` network (interior and border are
        foreground)."""
        return to_data_labels(self.labels_from_blocks(probs[: self.num_classes]), self.target)

    def predict_file(
        self,
        src: Union[str, Path],
        dst: Union[str, Path],
        *,
        probabilities: Union[str, Path, None] = None,
        channels: Optional[str] = None,
        stream: Optional[bool] = None,
    ):
        """Predict the image file ``src``; write the mask to ``dst`` in the training encoding.

        ``probabilities``: also write float32 probabilities there (TIFF). ``channels``:
        ``"gray"`` or ``"rgb"`` converts the image to what the model takes. A 2D TIFF is
        streamed (read and written tile by tile, the mask as a tiled TIFF, memory following
        the tile band rather than the image) when ``dst`` is a TIFF or the image is big;
        ``stream`` forces either way. Returns a :class:`~unetkit.inference.files.PredictionResult`.
        """
        from .files import predict_file

        return predict_file(self, src, dst, probabilities=probabilities, channels=channels, stream=stream)

    @staticmethod
    def labels_from_blocks(probs: np.ndarray) -> np.ndarray:
        """``(K, *S)`` probabilities -> int64 class ids ``(*S)`` (via :mod:`unetkit.activation`)."""
        return probabilities_to_labels(torch.from_numpy(probs)[None])[0].numpy()

    def _normalize(self, image: np.ndarray) -> np.ndarray:
        from ..data.normalize import normalize_image

        return normalize_image(image, self.normalize)

    def plan(self, shape: Sequence[int]):
        """The :class:`~unetkit.inference.tiling.TilePlan` and batch size for a spatial ``shape``."""
        tile, batch = auto_tile_and_batch(
            self.model, shape, self.device, self.tile_size, self.batch_size, overlap=self.overlap,
            out_channels=self.output_channels, max_memory=self.max_memory,
            element_bytes=4 if self.compute_dtype is None else 2,
        )
        plan = plan_tiles(self.model, shape, tile, self.overlap)
        return plan, min(batch, len(plan))

    def segment_cache_bytes(self) -> int:
        """Bytes of decoded input segments a streamed TIFF may cache: a quarter of the memory budget, at
        most :data:`~unetkit.inference.streaming.SEGMENT_CACHE_BYTES`."""
        from .streaming import SEGMENT_CACHE_BYTES

        return min(SEGMENT_CACHE_BYTES, memory_budget(self.device, self.max_memory) // 4)

    def iter_proba(
        self,
        source: RegionSource,
        prepare: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Stream the network's probabilities over ``source`` in slabs along the first axis.

        Yields ``(start, stop, block)``, ``block`` float32 ``(K', stop - start, *S[1:])`` with
        ``K'`` :attr:`output_channels` (1 for a binary head: the foreground). The
        input boxes are ``prepare``-d (e.g. normalised) after reading.
        """
        self.check_channels(source.shape[0])
        plan, batch_size = self.plan(source.shape[1:])
        window_np = blend_window(plan, self.blend, self.sigma_scale)
        window = torch.from_numpy(window_np).to(self.device)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(plan), unit="tile", leave=False, desc="tiles")

        network = self.prediction_network()

        def predict_batch(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return self._forward(batch, network).mul_(window).cpu().numpy()

        was_training = self.model.training
        self.model.eval()
        try:
            yield from blend_tiles(
                source, plan, predict_batch, window_np, self.output_channels, batch_size,
                prepare=prepare, on_batch=bar.update if bar is not None else None,
            )
        finally:
            self.model.train(was_training)
            if bar is not None:
                bar.close()

    def prediction_network(self) -> Any:
        """What computes the network's outputs in :attr:`precision`: the model itself in float32 (and
        for an exported model), else a :class:`~unetkit.inference.low_precision.LowPrecisionNetwork`
        copy; with ``compiled``, that network through ``torch.compile``. Made again only when the
        model's weights or statistics have changed since."""
        if not isinstance(self.model, nn.Module) or (self.compute_dtype is None and not self.compiled):
            return self.model
        key = tuple((id(t), t._version) for t in self.model.state_dict(keep_vars=True).values())
        with self._network_lock:
            if self._network is None or self._network[0] != key:
                network = self.model
                if self.compute_dtype is not None:
                    network = LowPrecisionNetwork(self.model, self.compute_dtype, CHANNELS_LAST[self.dims])
                if self.compiled:
                    network = torch.compile(network)
                self._network = (key, network)
            return self._network[1]

    def _forward(self, batch: np.ndarray, network: Any = None) -> torch.Tensor:
        """Probabilities ``(N, K', *out)`` for a tile batch ``(N, C, *in)``, averaged over TTA, computed
        by ``network`` (default: :meth:`prediction_network`)."""
        network = network if network is not None else self.prediction_network()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            if self.device.type == "cpu":
                # oneDNN convolutions run about twice as fast on channels-last input (the weights
                # follow the input's layout, so the caller's model is left as it is).
                x = x.contiguous(memory_format=CHANNELS_LAST[self.dims])
            if not self.tta:
                return self._activate(network(x))
            total = None
            transforms = symmetries(self.dims)
            vectors = 2 if self.target == "flows" else None
            for sym in transforms:
                probs = sym.invert(self._activate(network(sym.apply(x))), vectors)
                total = probs if total is None else total.add_(probs)
            return total.div_(len(transforms))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (the CPU for a network without torch parameters, e.g. exported)."""
    parameters = getattr(model, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


def channel_mismatch_message(got: int, expected: int) -> str:
    hint = {1: "grayscale (--channels gray)", 3: "RGB (--channels rgb)"}.get(expected)
    fix = f"convert the image to {hint}" if hint else f"give images with {expected} channels"
    return f"the image has {got} channel(s) but the model expects {expected}: {fix}"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-create it or the RUN folder") from exc
