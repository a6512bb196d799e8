"""Export a trained network to ONNX or TorchScript, and run exported files as predictor backends.

The exported graph is the network itself: input the normalised float tensor ``(N, C, *S)``
(``S`` = ``(H, W)`` or ``(D, H, W)``), output the logits ``(N, K, *S_out)`` of a segmentation
network or the restored image ``(N, C, *S_out)`` of a restoration network (normalised as the
input), with dynamic batch and spatial axes. Everything around it (task, normalisation and its
inverse, channel order, valid sizes, activation, class names and colours, super-resolution
upscaling) is the *contract*, a JSON document stored in the file (ONNX ``metadata_props``, one
key per section; TorchScript ``_extra_files["unetkit.json"]``) and in a JSON file beside it
(``FILE.json``), so a pipeline without unetkit can reproduce the predictor. The contract is read
without loading the network (a TorchScript file is a zip archive whose pickles run code when loaded:
take TorchScript files from trusted sources only), and a ``FILE.json`` that differs from the
contract in the file (an export killed between the two writes) is refused on load.

ONNX uses PyTorch's TorchScript-based exporter (``dynamo=False``): in torch 2.13 the
``torch.export``-based exporter needs the extra ``onnxscript`` package, takes tens of seconds
for a small 3D net and fails on the max-unpooling scatter of valid-padding nets, while the
TorchScript-based one exports every variant with dynamic axes (a small net in about a second,
the 31 M-parameter paper net in 2-5 s on two CPU cores).

:func:`load_backend` gives an object the :class:`~unetkit.inference.Predictor` takes in place
of a PyTorch network: it maps a float tensor batch to logits and answers the size rules.

A generation (diffusion) run exports its denoiser (:func:`export_diffusion_run`): one network call
``(noisy, timestep[, class_label][, condition_vector][, condition_image][, noise_level]) ->
prediction`` (the noise or ``v``); the sampling loop around it (schedule, DDIM/DDPM, classifier-free
guidance, the intensity range) is described in its contract (:func:`build_diffusion_contract`).
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from . import __version__
from .activation import MAP_SCALE
from .checkpoint import ModelLoadError
from .models import ModelConfig, build_model, model_config_from_dict
from .models.sizes import SizeRules
from .utils.atomic import atomic_write_bytes, atomic_write_json

FORMATS = ("onnx", "torchscript")
BACKENDS = ("torch", "onnxruntime", "torchscript")
# "auto": the fastest of them on this machine (:mod:`unetkit.inference.backend_choice`).
BACKEND_CHOICES = ("auto", *BACKENDS)
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
CONTRACT_VERSION = 1
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
RESTORED_NAME = "restored"  # the output of a restoration graph
TASKS = ("segmentation", "restoration")
TORCHSCRIPT_EXTRA_FILE = "unetkit.json"
MAX_CONTRACT_BYTES = 1 << 20
"""A contract is a few kB; a bigger one in a TorchScript archive is refused before it is unpacked."""
PathLike = Union[str, Path]

_NORMALIZE_FORMULAS = {
    "percentile": "per image and channel: (x - pct(x, low)) / (pct(x, high) - pct(x, low)), pct = percentile",
    "zscore": "per image and channel: (x - mean(x)) / std(x)",
    "fixed": "(x - min_value) / (max_value - min_value)",
}
_CHANNEL_ORDERS = {1: "gray", 3: "RGB"}
_NORMALIZE_PARAMS = {
    "percentile": "offset = pct(x, low), scale = max(pct(x, high) - pct(x, low), 1e-6)",
    "zscore": "offset = mean(x), scale = max(std(x), 1e-6)",
    "fixed": "offset = min_value, scale = max_value - min_value",
}


def sidecar_path(path: PathLike) -> Path:
    """The JSON contract written beside an exported file: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def valid_size_rule(model: SizeRules) -> dict[str, Any]:
    """The valid input sizes along each axis as arithmetic: ``first + k * step``, output ``s - 2 * context``.

    Raises ``ValueError`` if the network's sizes do not follow such a rule (every unetkit
    network does), so the contract never states a rule that is wrong.
    """
    lowest = model.axis_min_input()
    sizes = model.valid_input_sizes(lowest, lowest + 4096)[:64]
    first, step, context = sizes[0], sizes[1] - sizes[0], model.context()
    for k, size in enumerate(sizes):
        if size != first + k * step or model.axis_output_size(size) != size - 2 * context:
            raise ValueError(f"the valid sizes of {type(model).__name__} follow no first + k * step rule")
    if context > 0:
        tiling = (
            f"overlap-tile: mirror-pad the image (numpy 'reflect') by {context} px per side, cut input tiles "
            f"of a valid size at a stride that is a multiple of {step} and at most the output tile, and "
            "place the output tiles edge to edge"
        )
    else:
        tiling = "pad to a valid size, or tile with overlap (unetkit: 25 %, Gaussian-weighted blending)"
    return {
        "first": first,
        "step": step,
        "context": context,
        "rule": f"every spatial size s = {first} + k * {step} (k >= 0); output size s - {2 * context}",
        "examples": sizes[:8],
        "tiling": tiling,
    }


def build_contract(
    model: nn.Module,
    classes: Any = None,
    normalize: Any = None,
    object_diameter: Optional[float] = None,
    target: str = "semantic",
    task: str = "segmentation",
    scale: int = 1,
    membrane_class: Optional[int] = None,
) -> dict[str, Any]:
    """The pre/post-processing contract of ``model`` as a JSON-able dict.

    Args:
        model: a unetkit network (``.config`` and the size rules).
        classes: the ``ClassInfo`` of the training data, or ``None``.
        normalize: the ``NormalizeConfig`` of the training data, or ``None`` (inputs already normalised).
        object_diameter: the object scale the network was trained at (``data.object_diameter``), or ``None``.
        target: ``data.target``: ``"semantic"``, ``"three_class"`` (outputs background / interior /
            border; interior and border are the foreground class of ``classes``), ``"flows"`` (a
            foreground logit, then the flow field towards each object's centre, see :mod:`unetkit.flows`)
            or ``"distance"`` (a foreground logit, then the distance to the object's outline, 0-1).
        task: ``"segmentation"`` (the output is logits) or ``"restoration"`` (the output is an image
            ``(N, C, *S_out)`` on the normalised scale, see :func:`restoration_output`).
        scale: restoration: output pixels per input pixel along each axis (super-resolution, 2D only).
        membrane_class: the class outlining the objects as a thin network (``data.membrane_class``,
            EM data), whose objects take the membrane route; ``None`` for other data.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    scale = int(scale)
    if scale < 1 or (scale > 1 and task != "restoration"):
        raise ValueError(f"scale must be 1, or >= 1 for a restoration network; got {scale}")
    config: ModelConfig = model.config
    spatial = "D, H, W" if config.dims == 3 else "H, W"
    norm = normalize.to_dict() if normalize is not None else None
    binary = config.num_classes == 1
    if task == "restoration":
        output = restoration_output(config, norm, scale)
    elif target == "flows":
        output = {
            "name": OUTPUT_NAME,
            "shape": f"(N, {config.num_classes}, {spatial})",
            "kind": "logits and flows",
            "activation": f"channel 0: sigmoid (foreground); channels 1-{config.dims}: the flow components "
            f"along ({spatial}) times {MAP_SCALE:g}, no activation",
            "labels": "foreground where sigmoid(channel 0) > 0.5",
        }
    elif target == "distance":
        output = {
            "name": OUTPUT_NAME,
            "shape": f"(N, 2, {spatial})",
            "kind": "logits and distance",
            "activation": "channel 0: sigmoid (foreground); channel 1: the distance to the object's outline "
            f"divided by the object's largest (0-1) times {MAP_SCALE:g}, no activation",
            "labels": "foreground where sigmoid(channel 0) > 0.5",
        }
    else:
        output = {
            "name": OUTPUT_NAME,
            "shape": f"(N, {config.num_classes}, {spatial})",
            "kind": "logits",
            "activation": "sigmoid" if binary else "softmax over axis 1",
            "labels": "foreground where sigmoid(logit) > 0.5" if binary else "argmax over axis 1",
        }
    return {
        "format_version": CONTRACT_VERSION,
        "producer": f"unetkit {__version__}",
        "model": config.to_dict(),
        "input": {
            "name": INPUT_NAME,
            "shape": f"(N, {config.in_channels}, {spatial})",
            "dtype": "float32",
            "channels": config.in_channels,
            "channel_order": _CHANNEL_ORDERS.get(config.in_channels, "as stored, channel-first"),
            "layout": f"N, C, {spatial}",
        },
        "normalize": None if norm is None else {**norm, "formula": _NORMALIZE_FORMULAS[norm["mode"]]},
        "valid_sizes": valid_size_rule(model),
        "output": output,
        "classes": classes.to_dict() if classes is not None else None,
        "target": target,
        "object_scale": None if object_diameter is None else {
            "diameter": float(object_diameter),
            "rule": "resize each image so that the median equivalent diameter of its objects (measured on a "
            "first prediction) is this many pixels, predict, resize the probabilities back",
        },
        "task": task,
        "scale": scale,
        "membrane_class": membrane_class,
    }


def restoration_output(config: ModelConfig, norm: Optional[dict[str, Any]], scale: int) -> dict[str, Any]:
    """The ``"output"`` section of a restoration network's contract: an image ``(N, C, *S_out)`` on the
    normalised scale, mapped back by inverting the input's normalisation (``norm``, a
    ``NormalizeConfig.to_dict()`` or ``None``); for ``scale > 1`` the network input is the bicubic
    upscale of the image."""
    spatial = "D, H, W" if config.dims == 3 else "H, W"
    if norm is None:
        denormalize = "none: the input was not normalised, the output is on the input's scale"
    else:
        denormalize = (
            "per channel c: restored_c = y_c * scale_c + offset_c, where (offset_c, scale_c) are the input "
            f"normalisation's parameters ({_NORMALIZE_PARAMS[norm['mode']]}) computed on channel c of the "
            "image as given (before any upscaling); the network's input was (x_c - offset_c) / scale_c"
        )
    output: dict[str, Any] = {
        "name": RESTORED_NAME,
        "shape": f"(N, {config.num_classes}, {spatial})",
        "kind": "image",
        "activation": "none (identity)",
        "residual": bool(config.residual),
        "values": "on the normalised scale of the network's input; map them back with 'denormalize'",
        "denormalize": denormalize,
        "upscale": None,
    }
    if config.residual:
        output["residual_rule"] = "the network adds its (centre-cropped) input to its head's output"
    if scale > 1:
        output["upscale"] = (
            f"the network input is the bicubic upscale of the image by {scale} along H and W (size "
            f"(H * {scale}, W * {scale})): Keys' cubic with a = -0.5 on float pixels, as Pillow's BICUBIC "
            "resize of an 'F' image, not clipped; it is normalised with the parameters of the image before "
            f"upscaling, and the restored image is (H * {scale}, W * {scale})"
        )
    if config.in_channels == 1 and config.dims == 2:
        output["rgb_images"] = (
            "an RGB image is restored through its luminance: Y of ITU-R BT.601 (as MATLAB's rgb2ycbcr, on "
            "0-255) goes through the network, Cb and Cr are bicubic-upscaled (scale > 1) or kept, then "
            "converted back to RGB"
        )
    return output


def _output_name(contract: dict[str, Any]) -> str:
    """The graph's output name: ``"logits"`` (segmentation; files without one) or ``"restored"``."""
    return (contract.get("output") or {}).get("name") or OUTPUT_NAME


def _dynamic_axes(dims: int, output_name: str = OUTPUT_NAME) -> dict[str, dict[int, str]]:
    names = ["depth", "height", "width"][-dims:]
    return {
        INPUT_NAME: {0: "batch", **{i + 2: n for i, n in enumerate(names)}},
        output_name: {0: "batch", **{i + 2: f"out_{n}" for i, n in enumerate(names)}},
    }


def _example_input(model: nn.Module) -> torch.Tensor:
    """The smallest valid input above 32 per axis: big enough to trace every crop."""
    size = model.nearest_valid_input_sizes(32)[1]
    return torch.zeros((1, model.config.in_channels) + (size,) * model.config.dims)


def onnx_bytes(model: nn.Module, contract: dict[str, Any]) -> bytes:
    """Serialise ``model`` (eval, CPU) to ONNX with dynamic axes and ``contract`` in ``metadata_props``."""
    model = model.cpu().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The size checks and crops are Python branches on shapes; they do not depend on the
        # input size within one network (valid: always crop; same: never), so tracing them is exact.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (_example_input(model),), buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME], output_names=[_output_name(contract)],
            dynamic_axes=_dynamic_axes(model.config.dims, _output_name(contract)),
        )
    return _onnx_with_contract(buffer.getvalue(), contract)


def _onnx_with_contract(data: bytes, contract: dict[str, Any]) -> bytes:
    """The ONNX model ``data`` with unetkit as producer and ``contract`` in ``metadata_props``
    (one key per section, its value as JSON)."""
    import onnx

    proto = onnx.load_from_string(data)
    proto.producer_name = "unetkit"
    proto.producer_version = __version__
    del proto.metadata_props[:]
    for key, value in contract.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto.SerializeToString()


def torchscript_bytes(model: nn.Module, contract: dict[str, Any]) -> bytes:
    """Serialise ``model`` with ``torch.jit.script`` (keeps the size branches), contract as an extra file."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is the format asked for.
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model.cpu().eval())
        torch.jit.save(scripted, buffer, _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(contract)})
    return buffer.getvalue()


def _load_torchscript(source: Union[str, io.BytesIO]) -> Any:
    """Load a TorchScript module: this unpickles it, which runs code stored in the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(source, map_location="cpu")


def export_model(
    model: nn.Module,
    out: PathLike,
    fmt: str,
    *,
    classes: Any = None,
    normalize: Any = None,
    object_diameter: Optional[float] = None,
    target: str = "semantic",
    task: str = "segmentation",
    scale: int = 1,
    membrane_class: Optional[int] = None,
) -> Path:
    """Write ``model`` as ``fmt`` (``"onnx"``/``"torchscript"``) to ``out``, the contract to ``out.json``.

    ``task``, ``scale`` and ``membrane_class`` as in :func:`build_contract`. Both files are written
    atomically; returns ``out``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    contract = build_contract(model, classes, normalize, object_diameter, target, task, scale, membrane_class)
    data = onnx_bytes(model, contract) if fmt == "onnx" else torchscript_bytes(model, contract)
    out = Path(out)
    atomic_write_bytes(out, data)
    atomic_write_json(sidecar_path(out), contract)
    return out


def export_run(run_dir: PathLike, fmt: str, out: Optional[PathLike] = None) -> Path:
    """Export the best model of a RUN folder, with its task, classes, normalisation (and for
    super-resolution the scale) in the contract.

    ``out`` defaults to ``RUN/model.onnx`` or ``RUN/model.torchscript.pt``. A generation run
    (``config.json`` task ``"generation"``) exports its denoiser, see :func:`export_diffusion_run`.
    """
    from .inference import Predictor

    if _run_task(run_dir) == "generation":
        return export_diffusion_run(run_dir, fmt, out)
    predictor = Predictor.from_run(run_dir, device="cpu")
    target = Path(out) if out is not None else Path(run_dir) / f"model{SUFFIXES.get(fmt, '')}"
    return export_model(
        predictor.model, target, fmt, classes=predictor.classes, normalize=predictor.normalize,
        object_diameter=predictor.object_diameter, target=predictor.target, task=predictor.task,
        scale=predictor.scale, membrane_class=predictor.membrane_class,
    )


# ---------------------------------------------------------------------------------------------
# Generation (diffusion) runs: the denoiser with a fixed positional signature.

#: The inputs a denoiser graph can take, in order, and the ``DiffusionUNet.forward`` argument each feeds.
DIFFUSION_INPUTS = (
    ("noisy", "x"),
    ("timestep", "t"),
    ("class_label", "y"),
    ("condition_vector", "cond"),
    ("condition_image", "cond_image"),
    ("noise_level", "noise_level"),
)
PREDICTION_NAME = "prediction"  # the output of a denoiser graph
DIFFUSION_CONTRACT_VERSION = 1
RUN_CONFIG_FILE = "config.json"
MASK_CLASSES_FILE = "classes.json"


def _run_task(run_dir: PathLike) -> str:
    """The ``task`` in ``RUN/config.json`` (``"segmentation"`` when the file or the field is missing)."""
    path = Path(run_dir) / RUN_CONFIG_FILE
    if not path.is_file():
        return "segmentation"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from exc
    return str(data.get("task") or "segmentation") if isinstance(data, dict) else "segmentation"


def diffusion_input_names(model: nn.Module) -> list[str]:
    """The graph inputs of a ``DiffusionUNet``, in order: ``noisy``, ``timestep`` and those of its
    ``class_label`` (``num_classes > 0``), ``condition_vector`` (``cond_dim > 0``), ``condition_image``
    (``cond_channels > 0``) and ``noise_level`` (``noise_level_input``) that exist."""
    config = model.config
    present = {
        "class_label": config.num_classes > 0,
        "condition_vector": config.cond_dim > 0,
        "condition_image": config.cond_channels > 0,
        "noise_level": bool(config.noise_level_input),
    }
    return [name for name, _ in DIFFUSION_INPUTS if present.get(name, True)]


class DiffusionExportWrapper(nn.Module):
    """A ``DiffusionUNet`` behind the positional signature of :func:`diffusion_input_names`.

    ``forward(noisy, timestep, *extra)``: ``extra`` holds the optional inputs that exist, in order;
    ``timestep`` may be float (fractions allowed) or integer and is cast to float32, ``class_label``
    to int64, the rest to float32. Returns the network's prediction ``(N, C, *S)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.input_names = diffusion_input_names(model)
        self._arguments = dict(DIFFUSION_INPUTS)

    def forward(self, noisy: torch.Tensor, timestep: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, torch.Tensor] = {}
        for name, value in zip(self.input_names[2:], extra):
            kwargs[self._arguments[name]] = value.long() if name == "class_label" else value.float()
        return self.model(noisy.float(), timestep.float(), **kwargs)


def _diffusion_example_inputs(model: nn.Module, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Trace inputs: ``batch`` images of side ``2 * size_multiple`` (at least 16, a multiple of it)."""
    config = model.config
    multiple = model.size_multiple
    side = max(2 * multiple, -(-16 // multiple) * multiple)
    spatial = (side,) * config.dims
    examples = {
        "noisy": torch.zeros((batch, config.in_channels) + spatial),
        "timestep": torch.full((batch,), 10.0),
        "class_label": torch.zeros((batch,), dtype=torch.long),
        "condition_vector": torch.zeros((batch, config.cond_dim)),
        "condition_image": torch.zeros((batch, config.cond_channels) + spatial),
        "noise_level": torch.zeros((batch,)),
    }
    return tuple(examples[name] for name in diffusion_input_names(model))


def _diffusion_dynamic_axes(names: list[str], dims: int) -> dict[str, dict[int, str]]:
    """Batch axes of every input; the spatial axes of the images and the prediction (all one size)."""
    spatial = {i + 2: n for i, n in enumerate(["depth", "height", "width"][-dims:])}
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in names}
    for name in ("noisy", "condition_image"):
        if name in axes:
            axes[name] = {0: "batch", **spatial}
    axes[PREDICTION_NAME] = {0: "batch", **spatial}
    return axes


def _diffusion_input_details(
    model: nn.Module, generation: Any, names: list[str]
) -> dict[str, dict[str, str]]:
    """What to feed each input of a denoiser graph (shape, dtype, meaning)."""
    config = model.config
    spatial = "D, H, W" if config.dims == 3 else "H, W"
    null = config.num_classes
    condition_image = {
        "low_res": f"the low-resolution image on the [-1, 1] scale, bicubic-downscaled by {generation.scale} "
        "and upscaled back to the sample's size (SR3); at sampling, optionally plus Gaussian noise of the "
        "level given as noise_level",
        "mask": "the label mask as one-hot classes (1 where the pixel has class k, else 0), classes as in "
        "mask_classes",
    }.get(generation.condition or "none", "the conditioning image")
    multiple, last = model.size_multiple, generation.timesteps - 1
    details = {
        "noisy": {"shape": f"(N, {config.in_channels}, {spatial})", "dtype": "float32",
                  "meaning": f"x_t, the noisy sample; every spatial size a multiple of {multiple}"},
        "timestep": {"shape": "(N,)", "dtype": "float32",
                     "meaning": f"the step index t of the training schedule, 0 .. {last}"},
        "class_label": {"shape": "(N,)", "dtype": "int64",
                        "meaning": f"the class index 0 .. {null - 1}; {null} = no class (unconditional)"},
        "condition_vector": {"shape": f"(N, {config.cond_dim})", "dtype": "float32",
                             "meaning": "the conditioning vector; zeros = unconditional"},
        "condition_image": {"shape": f"(N, {config.cond_channels}, {spatial})", "dtype": "float32",
                            "meaning": condition_image},
        "noise_level": {"shape": "(N,)", "dtype": "float32",
                        "meaning": "the conditioning-augmentation noise level in [0, 1] (standard deviation "
                        "of the Gaussian noise added to condition_image, on the [-1, 1] scale); 0 = none"},
    }
    return {name: details[name] for name in names}


def _sampling_text(
    kind: str, timesteps: int, prediction: str, null_class: Optional[int], has_vector: bool
) -> str:
    """How to draw samples with the exported denoiser (schedule, DDIM / DDPM, guidance)."""
    if kind == "linear":
        low, high = 1e-4 * 1000 / timesteps, 0.02 * 1000 / timesteps
        betas = f"beta_t = linspace({low:g}, {high:g}, T) clipped at 0.999"
    else:
        betas = (
            "beta_t = min(1 - f(t + 1) / f(t), 0.999) with f(u) = cos((u / T + 0.008) / 1.008 * pi / 2) ** 2"
        )
    if prediction == "v":
        invert = "x0 = sqrt(ab_t) x_t - sqrt(1 - ab_t) out, eps = sqrt(1 - ab_t) x_t + sqrt(ab_t) out"
    else:
        invert = "eps = out, x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)"
    dropped = ([f"class_label = {null_class} (no class)"] if null_class is not None else []) + (
        ["condition_vector = zeros"] if has_vector else []
    )
    if dropped:
        guidance = (
            "Classifier-free guidance with scale g: out = uncond + g * (cond - uncond), cond = the graph "
            f"with the condition, uncond = the same call with {' and '.join(dropped)} (condition_image and "
            "noise_level unchanged); g = 1 is the plain conditional model, g = 0 the unconditional one. "
        )
    else:
        guidance = (
            "Classifier-free guidance (out = uncond + g * (cond - uncond)) does not apply: the network has "
            "no class or vector input to drop. "
        )
    return (
        f"Schedule ({kind}, T = {timesteps}): {betas} for t = 0 .. T - 1, ab_t = prod_(s <= t) (1 - beta_s); "
        "noising is x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps. "
        "Start from x ~ N(0, I) of shape (N, C, *S). Pick K steps t_k = floor(k * (T - 1) / (K - 1) + 0.5), "
        "k = 0 .. K - 1 (K = T: every step) and go from the last to the first: out = the graph at (x, t_k); "
        f"{invert} (x_t: the current x); clip x0 to [-1, 1] and recompute "
        "eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t). "
        "DDIM (deterministic, eta = 0): x = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps with ab_prev = ab at "
        "t_(k-1) (1 after the first step t_0). DDPM: ancestral sampling on the schedule respaced to the "
        "K steps (beta'_k = 1 - ab_(t_k) / ab_(t_(k-1))): x = mean + sqrt(var) z (no noise at k = 0), "
        "mean = beta'_k sqrt(ab_prev) / (1 - ab_t) x0 + (1 - ab_prev) sqrt(1 - beta'_k) / (1 - ab_t) x_t, "
        f"var = beta'_k (1 - ab_prev) / (1 - ab_t). {guidance}"
        "The result x0 is in [-1, 1]; map it to the data with intensity."
    )


def build_diffusion_contract(
    model: nn.Module, generation: Any, mask_classes: Optional[dict[str, Any]] = None
) -> dict[str, Any]:
    """The contract of an exported denoiser as a JSON-able dict.

    Args:
        model: a :class:`~unetkit.models.diffusion.DiffusionUNet`.
        generation: the run's ``GenerationConfig`` (condition, scale, schedule, timesteps,
            prediction, intensity, classes).
        mask_classes: a mask-conditioned run's ``classes.json`` content, or ``None``.
    """
    config = model.config
    names = diffusion_input_names(model)
    classes = list(generation.classes) if generation.classes else None
    null_class = config.num_classes if config.num_classes > 0 else None
    intensity = [float(v) for v in generation.intensity] if generation.intensity is not None else None
    return {
        "unetkit_version": __version__,
        "contract_version": DIFFUSION_CONTRACT_VERSION,
        "task": "generation",
        "model": config.to_dict(),
        "inputs": names,
        "input_details": _diffusion_input_details(model, generation, names),
        "output": PREDICTION_NAME,
        "prediction": generation.prediction,
        "schedule": {"kind": generation.schedule, "timesteps": int(generation.timesteps)},
        "condition": generation.condition or "none",
        "scale": int(generation.scale),
        "classes": classes,
        "null_class": null_class,
        "intensity": intensity,
        "intensity_rule": "data = (x + 1) / 2 * (high - low) + low for a sample x in [-1, 1]; "
        "images given as conditions map the other way",
        "image_channels": int(config.in_channels),
        "dims": int(config.dims),
        "size_multiple": int(model.size_multiple),
        "mask_classes": mask_classes,
        "sampling": _sampling_text(generation.schedule, int(generation.timesteps), generation.prediction,
                                   null_class, config.cond_dim > 0),
    }


def diffusion_onnx_bytes(model: nn.Module, contract: dict[str, Any]) -> bytes:
    """Serialise a ``DiffusionUNet`` (eval, CPU) as an ONNX denoiser with dynamic batch and spatial axes."""
    wrapper = DiffusionExportWrapper(model.cpu().eval()).eval()
    names = wrapper.input_names
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper, _diffusion_example_inputs(model), buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=names, output_names=[PREDICTION_NAME],
            dynamic_axes=_diffusion_dynamic_axes(names, model.config.dims),
        )
    return _onnx_with_contract(buffer.getvalue(), contract)


def diffusion_torchscript_bytes(model: nn.Module, contract: dict[str, Any]) -> bytes:
    """Serialise a ``DiffusionUNet`` with ``torch.jit.trace`` (its forward has no value branches; the
    input checks are skipped while tracing), the contract as an extra file."""
    wrapper = DiffusionExportWrapper(model.cpu().eval()).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, _diffusion_example_inputs(model), check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(contract)})
    return buffer.getvalue()


def export_diffusion_run(run_dir: PathLike, fmt: str, out: Optional[PathLike] = None) -> Path:
    """Export the denoiser of a generation RUN folder as ``fmt`` (``"onnx"``/``"torchscript"``).

    The graph takes the inputs of :func:`diffusion_input_names` positionally and outputs
    ``prediction`` (the noise or ``v``); the contract (:func:`build_diffusion_contract`) goes into the
    file and into ``out.json``. ``out`` defaults to ``RUN/model.onnx`` or ``RUN/model.torchscript.pt``.
    Both files are written atomically; returns ``out``.
    """
    from .checkpoint import load_model
    from .config import TrainConfig
    from .models.diffusion import DiffusionUNet

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    config_path = run_dir / RUN_CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: {run_dir} is not a RUN folder of `unetkit train`")
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    if config.task != "generation":
        raise ValueError(f"{run_dir} is a {config.task} run, not a generation run")
    model = load_model(run_dir)
    if not isinstance(model, DiffusionUNet):
        raise ValueError(f"{run_dir}: the model of a generation run must be a diffusion U-Net, "
                         f"got {type(model).__name__}")
    mask_path = run_dir / MASK_CLASSES_FILE
    mask_classes = json.loads(mask_path.read_text()) if mask_path.is_file() else None
    contract = build_diffusion_contract(model, config.generation, mask_classes)
    if fmt == "onnx":
        data = diffusion_onnx_bytes(model, contract)
    else:
        data = diffusion_torchscript_bytes(model, contract)
    target = Path(out) if out is not None else run_dir / f"model{SUFFIXES[fmt]}"
    atomic_write_bytes(target, data)
    atomic_write_json(sidecar_path(target), contract)
    return target


def read_contract(path: PathLike) -> dict[str, Any]:
    """The contract stored inside an exported ``.onnx`` or TorchScript file, read without loading the
    network. Raises :class:`~unetkit.checkpoint.ModelLoadError` for a damaged file, a file without a
    contract, or a ``FILE.json`` beside it that holds another contract."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a file written by `unetkit export`")
    fmt = "onnx" if path.suffix == ".onnx" else "torchscript"
    try:
        contract = _onnx_contract(path) if fmt == "onnx" else _torchscript_contract(path)
    except Exception as exc:  # each format's reader fails on a damaged file with errors of its own
        raise ModelLoadError(
            f"{path} is not a readable {fmt} file with a unetkit contract ({exc}); export it again with "
            f"`unetkit export RUN --format {fmt}`"
        ) from exc
    if not isinstance(contract.get("model"), dict):
        raise ModelLoadError(
            f"{path} holds no unetkit contract (no 'model' entry in its metadata); "
            "export it with `unetkit export RUN --format onnx|torchscript`"
        )
    try:
        model_config_from_dict(contract["model"])
    except ValueError as exc:
        raise ModelLoadError(
            f"{path}: the network in its contract is not valid: {exc}; export it again"
        ) from exc
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            beside = json.loads(sidecar.read_text())
        except ValueError:
            beside = None
        if beside != contract:
            raise ModelLoadError(
                f"{sidecar} does not match the contract inside {path} (an export interrupted between the "
                f"two files, or a file from another export): export again, or delete {sidecar.name} (the "
                "contract inside the file is the one unetkit uses)"
            )
    return contract


def _onnx_contract(path: Path) -> dict[str, Any]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in proto.metadata_props}


def _torchscript_contract(path: Path) -> dict[str, Any]:
    """The ``extra/unetkit.json`` entry of a TorchScript zip archive, read with ``zipfile``:
    ``torch.jit.load`` would unpickle the module, which runs code stored in the file."""
    with zipfile.ZipFile(path) as archive:
        entries = [
            info for info in archive.infolist()
            if info.filename.split("/")[1:] == ["extra", TORCHSCRIPT_EXTRA_FILE]
        ]
        if not entries:
            return {}
        if entries[0].file_size > MAX_CONTRACT_BYTES:
            raise ValueError(f"its contract is {entries[0].file_size} bytes, more than {MAX_CONTRACT_BYTES}")
        return json.loads(archive.read(entries[0]))


class ExportedModel(SizeRules):
    """An exported network behind the interface the :class:`~unetkit.inference.Predictor` uses.

    ``model(x)`` maps a float32 tensor ``(N, C, *S)`` to logits ``(N, K, *S_out)`` (a restoration
    network: the normalised image ``(N, C, *S_out)``) on the tensor's device; ``.config``,
    ``.context()``, the other size rules, ``.task`` and ``.scale`` come from the contract. The
    network runs on the CPU (ONNX Runtime's CPU provider, TorchScript on CPU).
    """

    def __init__(self, kind: str, path: PathLike, contract: dict[str, Any], runner: Any) -> None:
        self.kind = kind
        self.path = Path(path)
        self.contract = contract
        self.config = ModelConfig.from_dict(contract["model"])
        with torch.device("meta"):  # the size rules only: no weights are allocated
            self._rules = build_model(self.config)
        self._runner = runner

    @property
    def spatial_dims(self) -> int:
        return self.config.dims

    def axis_output_size(self, size: int) -> Optional[int]:
        return self._rules.axis_output_size(size)

    def axis_min_input(self) -> int:
        return self._rules.axis_min_input()

    def size_rule(self) -> str:
        return self._rules.size_rule()

    def to(self, device: Union[str, torch.device]) -> ExportedModel:
        """No-op: the exported network runs on the CPU; outputs go back to the input's device."""
        return self

    training = False  # an exported graph is always in inference mode

    def eval(self) -> ExportedModel:
        return self

    def train(self, mode: bool = True) -> ExportedModel:
        if mode:
            raise ValueError(f"{self.path}: an exported {self.kind} model cannot be trained")
        return self

    @property
    def task(self) -> str:
        """``"segmentation"`` or ``"restoration"`` from the contract (``"segmentation"`` for older files)."""
        return self.contract.get("task") or "segmentation"

    @property
    def scale(self) -> int:
        """Restoration: output pixels per input pixel (super-resolution) from the contract; 1 otherwise."""
        return int(self.contract.get("scale") or 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *S)`` float32 -> logits ``(N, K, *S_out)`` (restoration: the image ``(N, C, *S_out)``),
        on ``x.device``."""
        if self.kind == "onnxruntime":
            batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
            outputs = self._runner.run([_output_name(self.contract)], {INPUT_NAME: batch})
            logits = torch.from_numpy(outputs[0])
        else:
            with torch.inference_mode():
                logits = self._runner(x.detach().cpu().float())
        return logits.to(x.device)

    def class_info(self) -> Any:
        """The ``ClassInfo`` stored in the contract, or ``None``."""
        from .data.classes import ClassInfo

        data = self.contract.get("classes")
        return ClassInfo.from_dict(data) if data else None

    def normalize_config(self) -> Any:
        """The ``NormalizeConfig`` stored in the contract, or ``None`` (inputs already normalised)."""
        from .data.normalize import NormalizeConfig

        data = self.contract.get("normalize")
        return NormalizeConfig.from_dict(data) if data else None

    def target(self) -> str:
        """``data.target`` stored in the contract (``"semantic"`` for files without one)."""
        return self.contract.get("target") or "semantic"

    def membrane_class(self) -> Optional[int]:
        """The membrane class stored in the contract (``data.membrane_class``), or ``None``."""
        value = self.contract.get("membrane_class")
        return None if value is None else int(value)

    def object_diameter(self) -> Optional[float]:
        """The object scale stored in the contract (``data.object_diameter``), or ``None``."""
        scale = self.contract.get("object_scale")
        return float(scale["diameter"]) if scale else None

    def __repr__(self) -> str:
        return f"ExportedModel({self.kind!r}, {str(self.path)!r})"


def _onnx_session(model: Union[bytes, str]) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _refuse_generation(source: Path) -> None:
    raise ValueError(
        f"{source} holds a generation (diffusion) network, which the Predictor does not run; draw "
        "samples with `unetkit generate`, or run the file written by `unetkit export` following its "
        "contract's 'sampling'"
    )


def load_backend(kind: str, source: PathLike) -> Union[nn.Module, ExportedModel]:
    """A network for the :class:`~unetkit.inference.Predictor` run by ``kind`` (one of :data:`BACKENDS`).

    ``source`` is a RUN folder (the model is exported in memory for ``onnxruntime`` and
    ``torchscript``) or, for those two, a file written by :func:`export_model`.
    ``"torch"`` needs a RUN folder (or a model folder with ``model.json``).
    """
    from .checkpoint import load_model

    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; use one of {', '.join(BACKENDS)}")
    source = Path(source)
    if source.is_dir() and _run_task(source) == "generation":
        _refuse_generation(source)
    if kind == "torch":
        return load_model(source)
    if source.is_dir():
        from .inference import Predictor

        predictor = Predictor.from_run(source, device="cpu")
        contract = build_contract(
            predictor.model, predictor.classes, predictor.normalize, predictor.object_diameter,
            predictor.target, predictor.task, predictor.scale, predictor.membrane_class,
        )
        if kind == "onnxruntime":
            runner = _onnx_session(onnx_bytes(predictor.model, contract))
        else:
            runner = _load_torchscript(io.BytesIO(torchscript_bytes(predictor.model, contract)))
        return ExportedModel(kind, source, contract, runner)
    contract = read_contract(source)
    if contract.get("task") == "generation":
        _refuse_generation(source)
    expected = ".onnx" if kind == "onnxruntime" else ".pt"
    if source.suffix != expected:
        raise ValueError(
            f"{source}: the {kind} backend reads {expected} files; export one with "
            f"`unetkit export RUN --format {'onnx' if kind == 'onnxruntime' else 'torchscript'}`"
        )
    if kind == "onnxruntime":
        runner = _onnx_session(str(source))
    else:
        runner = _load_torchscript(str(source))
    return ExportedModel(kind, source, contract, runner)


def predictor_for(source: PathLike, backend: str = "auto", **kwargs: Any) -> Any:
    """A :class:`~unetkit.inference.Predictor` for a RUN folder, an exported file or a bioimage.io package
    that unetkit wrote (:mod:`unetkit.bioimageio_package`), run by ``backend`` (one of
    :data:`BACKEND_CHOICES`; ``"auto"``: see :func:`auto_predictor`).

    Normalisation, classes, object scale, target, task and (super-resolution) scale come from the RUN
    folder or the file's contract unless given in ``kwargs`` (the other keyword arguments go to the
    Predictor too). Raises ``OSError`` or ``ValueError`` (:class:`~unetkit.checkpoint.ModelLoadError`
    for whatever else goes wrong while loading), each naming ``source``.
    """
    try:
        return _predictor_for(source, backend, **kwargs)
    except (OSError, ValueError):
        raise
    except Exception as exc:  # a damaged run or file fails in the libraries' own ways (RuntimeError...)
        raise ModelLoadError(
            f"{source} could not be loaded ({type(exc).__name__}: {exc}): give an intact RUN folder of "
            "`unetkit train` or a file of `unetkit export` (train or export it again if it is damaged)"
        ) from exc


def _predictor_for(source: PathLike, backend: str, **kwargs: Any) -> Any:
    from .bioimageio_package import is_bioimageio_package, package_predictor
    from .inference import Predictor

    if backend == "auto":
        return auto_predictor(source, **kwargs)
    if is_bioimageio_package(source):
        return package_predictor(source, backend, **kwargs)
    if backend == "torch":
        return Predictor.from_run(source, **kwargs)
    model = load_backend(backend, source)
    if kwargs.get("normalize") is None:
        kwargs["normalize"] = model.normalize_config()
    if kwargs.get("classes") is None:
        kwargs["classes"] = model.class_info()
    if kwargs.get("object_diameter") is None:
        kwargs["object_diameter"] = model.object_diameter()
    if kwargs.get("target") is None:
        kwargs["target"] = model.target()
    if kwargs.get("membrane_class") is None:
        kwargs["membrane_class"] = model.membrane_class()
    if kwargs.get("task") is None:
        kwargs["task"] = model.task
    if kwargs.get("scale") is None:
        kwargs["scale"] = model.scale
    return Predictor(model, **kwargs)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def auto_predictor(source: PathLike, **kwargs: Any) -> Any:
    """The predictor of ``backend="auto"``: an exported file runs in its own runtime; a RUN folder or a
    package runs in PyTorch (in its precision, or float32 if that is faster) or ONNX Runtime, whichever
    :func:`~unetkit.inference.backend_choice.fastest_predictor` finds faster here. The measurement is
    made on the CPU only, when ONNX Runtime is installed, the precision is not forced to bf16/fp16 (ONNX
    Runtime computes in float32) and ``compiled`` is not asked for; otherwise PyTorch runs without one."""
    from .bioimageio_package import is_bioimageio_package
    from .inference.backend_choice import BackendChoice, fastest_predictor

    path = Path(source)
    if path.is_file() and not is_bioimageio_package(path):
        return _predictor_for(path, "onnxruntime" if path.suffix == ".onnx" else "torchscript", **kwargs)
    torch_predictor = _predictor_for(path, "torch", **kwargs)
    if (
        torch_predictor.device.type != "cpu"
        or torch_predictor.precision_setting in ("bf16", "fp16")
        or torch_predictor.compiled
        or not onnxruntime_available()
    ):
        torch_predictor.backend_choice = BackendChoice("torch")
        return torch_predictor
    others = {"onnxruntime": lambda: _predictor_for(path, "onnxruntime", **kwargs)}
    if torch_predictor.precision != "fp32":  # reduced precision does not pay for every network
        others["torch:fp32"] = lambda: _predictor_for(path, "torch", **{**kwargs, "precision": "fp32"})
    return fastest_predictor(torch_predictor, others)
