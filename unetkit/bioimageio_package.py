"""bioimage.io (BioImage Model Zoo) model packages: write one from a RUN folder, run one unetkit wrote.

``unetkit export RUN --format bioimageio --out MODEL.zip`` (:func:`export_bioimageio_run`) writes a zip
package in the bioimage.io model description format 0.5 (``rdf.yaml`` and the files it names), which
bioimage.io tools run (deepImageJ in Fiji, ilastik, QuPath, ``bioimageio.core``):

- input ``image`` ``(batch, channel, y, x)`` (3D: ``(batch, channel, z, y, x)``), float32, each spatial
  axis ``min + n * step`` (the network's valid sizes); output ``probabilities`` (segmentation) or
  ``restored`` (restoration) with sizes referring to the input's (``- 2 * context`` for valid padding);
- pre- and post-processing with the format's own operations, matching :mod:`unetkit.data.normalize`
  (``scale_range`` per image and channel for ``percentile``, ``zero_mean_unit_variance`` for
  ``zscore``, ``scale_linear`` for ``fixed``) and the activation (``sigmoid`` / ``softmax``);
- weights as a PyTorch state dict (architecture: :func:`build_network` of this module with the
  ``ModelConfig`` as keyword arguments, so it needs unetkit installed), TorchScript and ONNX (both
  made by :mod:`unetkit.export`, with its contract inside);
- a test input and the output unetkit computes for it (``.npy``), a cover, a README;
- ``config.unetkit``: the :mod:`unetkit.export` contract (normalisation, classes, target, object scale,
  task), from which :func:`package_predictor` rebuilds unetkit's own :class:`~unetkit.inference.Predictor`
  (``unetkit predict MODEL.zip ...``).

What the format cannot express (the object scale, instance separation, unetkit's overlap-tile and
blended tiling, TTA, the inverse of a per-image normalisation) is written in the package's README and
raised as a :class:`BioimageioExportWarning`; what it cannot run at all (generation runs, flows and
distance targets, super-resolution) is refused with a ``ValueError`` that says what to use instead.

A module of its own rather than part of :mod:`unetkit.export`: it packages (files, metadata, test data,
documentation) around the graphs that module makes, and it needs the optional ``bioimageio.spec``
(and its pydantic / xarray stack), imported only when a package is written. Reading a package for
``unetkit predict`` needs only PyYAML and the zip file.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch
from torch import nn

from . import __version__
from .export import (
    BACKENDS,
    ONNX_OPSET,
    RUN_CONFIG_FILE,
    ExportedModel,
    _load_torchscript,
    _onnx_session,
    _run_task,
    build_contract,
    onnx_bytes,
    torchscript_bytes,
)
from .models import ModelConfig, build_model
from .models.sizes import SizeRules

if TYPE_CHECKING:
    from .inference import Predictor

PathLike = Union[str, Path]

FORMAT = "bioimageio"
PACKAGE_CONFIG_VERSION = 1
"""Version of the ``config.unetkit`` entry this module writes and reads."""
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
INPUT_ID = "image"
OUTPUT_IDS = {"segmentation": "probabilities", "restoration": "restored"}
WEIGHTS_FILES = {
    "pytorch_state_dict": "weights.pt",
    "torchscript": "weights.torchscript.pt",
    "onnx": "weights.onnx",
}
BACKEND_WEIGHTS = {"torch": "pytorch_state_dict", "torchscript": "torchscript", "onnxruntime": "onnx"}
TEST_INPUT_FILE = "test_input.npy"
TEST_OUTPUT_FILE = "test_output.npy"
SAMPLE_FILES = ("sample_input.tif", "sample_output.tif")
"""The test input and output as TIFF (``sample_tensor``: what the model zoo's pages show)."""
COVER_FILE = "cover.png"
README_FILE = "README.md"
TEST_SIDE = {2: 256, 3: 48}
"""The largest test image edge per dimensionality (the test input is cropped to a valid size at most this)."""
MAX_RDF_BYTES = 1 << 20
UNET_PAPER = (
    "Ronneberger O, Fischer P, Brox T (2015). U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation. MICCAI 2015, LNCS 9351, 234-241",
    "10.1007/978-3-319-24574-4_28",
)
SPATIAL_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


class BioimageioExportWarning(UserWarning):
    """Something the exported package cannot express: bioimage.io tools predict differently there."""


@dataclass
class Citation:
    """A ``cite`` entry of the package: ``text`` and a DOI or a URL."""

    text: str
    doi: Optional[str] = None
    url: Optional[str] = None

    @classmethod
    def parse(cls, option: str) -> Citation:
        """``"TEXT=DOI_OR_URL"`` (the CLI's ``--cite``): a value starting with ``http`` is a URL."""
        text, sep, ref = option.rpartition("=")
        if not sep or not text.strip() or not ref.strip():
            raise ValueError(f"--cite takes TEXT=DOI_OR_URL (e.g. 'My paper=10.1000/xyz'), got {option!r}")
        ref = ref.strip()
        if ref.startswith(("http://", "https://")):
            return cls(text.strip(), url=ref)
        return cls(text.strip(), doi=ref.removeprefix("doi:").removeprefix("https://doi.org/"))

    def to_rdf(self) -> dict[str, str]:
        entry = {"text": self.text}
        if self.doi:
            entry["doi"] = self.doi
        if self.url:
            entry["url"] = self.url
        return entry


@dataclass
class PackageOptions:
    """The descriptive fields of a package (the CLI's ``--name``, ``--author``... options).

    ``name`` and ``description`` default to ones made from the run; ``authors`` to ``["unknown"]`` (with
    a warning: the model zoo wants real names); ``cite`` is added to the U-Net paper; ``sample`` is the
    image the test input is cut from (default: the first training image the run's config names, if it
    is still there, else a synthetic cells image).
    """

    name: Optional[str] = None
    description: Optional[str] = None
    authors: list[str] = field(default_factory=list)
    license: str = "MIT"
    cite: list[Citation] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    sample: Optional[PathLike] = None


def build_network(**config: Any) -> nn.Module:
    """The architecture callable of the package's ``pytorch_state_dict`` weights: the network a
    ``ModelConfig``'s fields describe (``model.json``), untrained; maps ``(N, C, *S)`` to ``(N, K, *S')``."""
    return build_model(ModelConfig.from_dict(config))


# ---------------------------------------------------------------------------------------------
# What the package says: axes, processing, notes.


def spatial_axes(dims: int) -> tuple[str, ...]:
    """The package's spatial axis ids: ``("y", "x")`` or ``("z", "y", "x")``."""
    return SPATIAL_AXES[dims]


def preprocessing(normalize: Any, dims: int) -> list[dict[str, Any]]:
    """The bioimage.io preprocessing equal to unetkit's normalisation (``NormalizeConfig`` or ``None``),
    per image and channel (statistics over the spatial axes only)."""
    if normalize is None:
        return []
    axes = list(spatial_axes(dims))
    if normalize.mode == "percentile":
        kwargs = {"axes": axes, "min_percentile": float(normalize.low),
                  "max_percentile": float(normalize.high), "eps": 1e-6}
        return [{"id": "scale_range", "kwargs": kwargs}]
    if normalize.mode == "zscore":
        return [{"id": "zero_mean_unit_variance", "kwargs": {"axes": axes, "eps": 1e-6}}]
    span = float(normalize.max_value - normalize.min_value)
    gain, offset = 1.0 / span, -float(normalize.min_value) / span
    if gain == 1.0 and offset == 0.0:  # 0-1 already: the format refuses a no-op scale_linear
        return []
    return [{"id": "scale_linear", "kwargs": {"gain": gain, "offset": offset}}]


def postprocessing(task: str, num_outputs: int, normalize: Any) -> list[dict[str, Any]]:
    """The bioimage.io postprocessing of the network's output: ``sigmoid`` (one output channel),
    ``softmax`` over the channels (segmentation), the inverse of a ``fixed`` normalisation
    (restoration; a per-image normalisation has no inverse operation in the format: none)."""
    if task == "segmentation":
        if num_outputs == 1:
            return [{"id": "sigmoid"}]
        return [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    if normalize is not None and normalize.mode == "fixed":
        span = float(normalize.max_value - normalize.min_value)
        if span != 1.0 or normalize.min_value != 0.0:
            return [{"id": "scale_linear", "kwargs": {"gain": span, "offset": float(normalize.min_value)}}]
    return []


def output_channel_names(predictor: Predictor) -> list[str]:
    """One name per output channel: the class names (a one-channel head: the foreground class), the
    three-class target's background / interior / border, or the image channels (restoration)."""
    k = predictor.model.config.num_classes
    if predictor.task == "restoration":
        return input_channel_names(k)
    if predictor.target == "three_class":
        return ["background", "interior", "border"]
    names = list(predictor.classes.names) if predictor.classes is not None else []
    if k == 1:
        return [names[1] if len(names) == 2 else "foreground"]
    return names if len(names) == k else [f"class{i}" for i in range(k)]


def input_channel_names(channels: int) -> list[str]:
    """``["gray"]``, ``["red", "green", "blue"]`` or ``["channel0", ...]``."""
    return {1: ["gray"], 3: ["red", "green", "blue"]}.get(channels, [f"channel{i}" for i in range(channels)])


def refusal(predictor: Predictor) -> Optional[str]:
    """Why a run's network cannot be a bioimage.io package (``None`` if it can)."""
    norm = predictor.normalize
    if norm is not None and norm.mode == "percentile" and norm.high <= 1.0:
        return (
            f"it normalises with the percentiles {norm.low}-{norm.high}, and bioimage.io's scale_range needs "
            "an upper percentile above 1 (percentiles are given in 0-100)"
        )
    if predictor.task == "restoration" and predictor.scale > 1:
        return (
            f"it is a super-resolution run (scale {predictor.scale}): its network takes the bicubic upscale "
            "of the image, a step bioimage.io has no operation for"
        )
    if predictor.task == "segmentation" and predictor.target in ("flows", "distance"):
        return (
            f"it was trained with target {predictor.target!r}: one output holds a foreground logit (sigmoid) "
            f"and {predictor.target} maps (no activation), which bioimage.io's per-tensor operations cannot "
            "treat differently, and unetkit's object separation from them has no bioimage.io operation"
        )
    return None


def export_notes(predictor: Predictor) -> list[str]:
    """What a bioimage.io tool does differently from ``unetkit predict`` for this run (one sentence each)."""
    notes = [
        "bioimage.io tools tile images in their own way; unetkit overlaps same-padding tiles by 25 % and "
        "blends them with a Gaussian window (valid padding: the paper's overlap-tile), and can average "
        "flips and rotations (--tta); neither is in the package, so predictions can differ near tile edges"
    ]
    context = predictor.model.context()
    if context > 0:
        notes.append(
            f"valid padding: the output is {2 * context} px smaller than the input along each axis; to get "
            f"the whole image, mirror-pad it by {context} px per side first (unetkit does) or let the tool "
            "tile with that overlap"
        )
    if predictor.object_diameter is not None:
        notes.append(
            f"the run predicts at an object scale of {predictor.object_diameter:g} px (each image resized so "
            "that its objects are that wide, measured on a first prediction); bioimage.io has no such "
            f"operation: resize images so that objects are about {predictor.object_diameter:g} px wide first"
        )
    if predictor.task == "segmentation":
        notes.append(
            "instance separation (unetkit predict --instances: watershed, three-class or membrane routes) "
            "is not part of the package: tools get per-pixel probabilities"
        )
        if predictor.target == "three_class":
            notes.append(
                "three-class target: the output is background / interior / border; unetkit's labels call "
                "interior and border foreground"
            )
    else:
        norm = predictor.normalize
        if norm is not None and norm.mode != "fixed":
            notes.append(
                f"the restored image is on the normalised scale: the {norm.mode} normalisation is computed "
                "per image and bioimage.io has no operation that inverts it; multiply by the input's scale "
                "and add its offset per channel to get intensities (unetkit predict does)"
            )
        if predictor.dims == 2 and predictor.in_channels == 1:
            notes.append(
                "unetkit restores an RGB image through its luminance (Y of BT.601) with this grey-level "
                "network; bioimage.io tools need a one-channel image"
            )
    return notes


# ---------------------------------------------------------------------------------------------
# Test data: an image cut to a valid size, and the output unetkit computes for it.


def _valid_at_most(model: SizeRules, size: int) -> int:
    """The largest valid input length ``<= size``, or the smallest valid one if none is."""
    below, above = model.nearest_valid_input_sizes(max(size, 1))
    return below if below is not None else above


def cut_test_image(image: np.ndarray, model: SizeRules) -> np.ndarray:
    """``image`` ``(C, *S)`` cut to the network's valid sizes: the centre box of the largest valid size
    at most :data:`TEST_SIDE` per axis (images smaller than the smallest valid size are mirror-padded);
    float32 ``(C, *S_test)``."""
    dims = model.spatial_dims
    image = np.asarray(image, dtype=np.float32)
    target = [_valid_at_most(model, min(n, TEST_SIDE[dims])) for n in image.shape[1:]]
    pad = [(0, 0)] + [(max(t - n, 0) // 2, max(t - n, 0) - max(t - n, 0) // 2) for n, t in
                      zip(image.shape[1:], target)]
    if any(p != (0, 0) for p in pad):
        image = np.pad(image, pad, mode="symmetric")
    starts = [(n - t) // 2 for n, t in zip(image.shape[1:], target)]
    box = (slice(None),) + tuple(slice(s, s + t) for s, t in zip(starts, target))
    return np.ascontiguousarray(image[box])


def reference_output(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    """What the package's pipeline must give for ``image`` ``(C, *S)`` (a valid size), computed the
    unetkit way: normalise (:mod:`unetkit.data.normalize`), one network pass over the whole image, then
    the activation (segmentation: probabilities ``(K, *S')``, ``K`` the network's channels) or, for a
    restoration run with ``fixed`` normalisation, its inverse (``(C, *S')``); float32."""
    from .activation import logits_to_probabilities
    from .data.normalize import normalization_params

    x = np.asarray(image, dtype=np.float32)
    norm = predictor.normalize
    if norm is not None:
        offset, scale = normalization_params(x, norm)
        shape = (-1,) + (1,) * (x.ndim - 1)
        x = (x - offset.reshape(shape)) / scale.reshape(shape)
    model = predictor.model
    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(x))[None].to(predictor.device)).float().cpu()
    if predictor.task == "segmentation":
        return logits_to_probabilities(out)[0].numpy()
    y = out[0].numpy()
    if norm is not None and norm.mode == "fixed":
        y = y * float(norm.max_value - norm.min_value) + float(norm.min_value)
    return y.astype(np.float32)


def _sample_image(run_dir: Path, predictor: Predictor, sample: Optional[PathLike]) -> tuple[np.ndarray, str]:
    """The image the test input is cut from, ``(C, *S)``, and where it came from."""
    from .data.io import read_image

    if sample is not None:
        image = read_image(sample)
        if image.ndim == predictor.dims:
            image = image[None]
        if image.ndim != predictor.dims + 1:
            raise ValueError(f"{sample}: a {image.ndim}D array, but the network is {predictor.dims}D")
        predictor.check_channels(image.shape[0])
        return image, str(sample)
    found = _training_image(run_dir)
    if found is not None:
        try:
            image = predictor.as_channels_first(read_image(found))
            return image, str(found)
        except ValueError:  # unreadable now, or of another layout: fall back to a synthetic image
            pass
    from .data.synthetic import make_synthetic_cells

    cells = make_synthetic_cells(TEST_SIDE[predictor.dims], seed=0, dims=predictor.dims,
                                 channels=predictor.in_channels)
    image = (np.clip(cells.image, 0.0, 1.0) * 255.0).astype(np.float32)
    return image, "a synthetic cells image (no --sample given and no training image found)"


def _training_image(run_dir: Path) -> Optional[Path]:
    """The first image of the run's training data (``config.json`` ``data.train``), if it is still there."""
    from .data.io import list_images

    path = run_dir / "config.json"
    try:
        train = json.loads(path.read_text()).get("data", {}).get("train")
    except (OSError, ValueError, AttributeError):
        return None
    if not train:
        return None
    root = Path(train)
    for folder in (root / "images", root / "inputs", root):
        if folder.is_dir():
            images = list_images(folder)
            if images:
                return images[0]
    return None


# ---------------------------------------------------------------------------------------------
# Writing the package.


def _cover(image: np.ndarray, output: np.ndarray, predictor: Predictor) -> bytes:
    """A 2:1 PNG: the test input (left, cropped to the output's box for valid padding) and the prediction
    (right), the middle slice of a volume."""
    from PIL import Image

    from .data.classes import default_colors

    context = predictor.model.context()
    if context > 0:
        image = image[(slice(None),) + (slice(context, -context),) * predictor.dims]

    def middle(a: np.ndarray) -> np.ndarray:
        return a[:, a.shape[1] // 2] if a.ndim == 4 else a

    def grey(a: np.ndarray) -> np.ndarray:
        low, high = np.percentile(a, [1.0, 99.8])
        return (np.clip((a - low) / max(high - low, 1e-6), 0.0, 1.0) * 255).astype(np.uint8)

    def rgb(a: np.ndarray) -> np.ndarray:
        if a.shape[0] == 3:
            return np.moveaxis(np.stack([grey(c) for c in a]), 0, -1)
        return np.repeat(grey(a[0])[..., None], 3, axis=-1)

    left = rgb(middle(image))
    out = middle(output)
    if predictor.task == "segmentation":
        labels = (out[0] > 0.5).astype(np.int64) if out.shape[0] == 1 else out.argmax(axis=0)
        colors = predictor.classes.colors if predictor.classes is not None and out.shape[0] > 1 else None
        if predictor.target == "three_class" or colors is None or len(colors) < max(out.shape[0], 2):
            colors = default_colors(max(out.shape[0], 2))
        right = np.asarray(colors, dtype=np.uint8)[labels]
    else:
        right = rgb(out)
    side = 256
    panels = [Image.fromarray(p).resize((side, side), Image.Resampling.NEAREST) for p in (left, right)]
    cover = Image.new("RGB", (2 * side, side))
    for i, panel in enumerate(panels):
        cover.paste(panel, (i * side, 0))
    buffer = io.BytesIO()
    cover.save(buffer, format="PNG")
    return buffer.getvalue()


def _readme(name: str, description: str, predictor: Predictor, contract: dict[str, Any], rdf: dict[str, Any],
            notes: list[str], sample_from: str) -> str:
    """The package's documentation (markdown)."""
    dims = predictor.dims
    axes = ", ".join(("batch", "channel") + spatial_axes(dims))
    rule = contract["valid_sizes"]
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    pre = ", ".join(p["id"] for p in inp["preprocessing"]) or "none"
    post = ", ".join(p["id"] for p in out["postprocessing"]) or "none"
    norm = contract.get("normalize")
    smaller = f" minus {2 * rule['context']}" if rule["context"] else ""
    in_names = ", ".join(input_channel_names(predictor.in_channels))
    lines = [
        f"# {name}",
        "",
        description,
        "",
        f"Written by unetkit {__version__} (`unetkit export RUN --format bioimageio`).",
        "",
        "## Input",
        "",
        f"`{INPUT_ID}`: float32 `({axes})`, channels {in_names}. "
        f"Each spatial size is {rule['first']} + n * {rule['step']} (n = 0, 1, ...). "
        f"Preprocessing: {pre}"
        + (f" (unetkit's {norm['mode']} normalisation: {norm['formula']})." if norm else "."),
        "",
        "## Output",
        "",
        f"`{out['id']}`: float32 `({axes})`, channels {', '.join(output_channel_names(predictor))}; each "
        f"spatial size "
        f"is the input's{smaller}. Postprocessing: {post}.",
        "",
        _output_meaning(predictor, restored_scaled=post != "none"),
        "",
        "## Network",
        "",
        f"`{contract['model']['architecture']}` {dims}D, depth {contract['model']['depth']}, "
        f"{contract['model']['base_channels']} base channels, {contract['model']['padding']} padding, "
        f"{contract['model']['up_mode']} up-sampling. Weights: PyTorch state dict (architecture "
        "`unetkit.bioimageio_package.build_network(**config)`: needs unetkit installed), TorchScript and "
        "ONNX (opset 17); the last two run without unetkit and hold unetkit's contract (ONNX metadata, "
        "TorchScript extra file `unetkit.json`).",
        "",
        "## What this package does not express",
        "",
        *[f"- {note}." for note in notes],
        "",
        "## Use",
        "",
        "- **Fiji / deepImageJ**: install the model from this zip (deepImageJ's Install Model); deepImageJ "
        "runs the TorchScript or ONNX weights with the pre- and postprocessing above.",
        "- **ilastik**: the Neural Network Classification workflow loads the zip; **QuPath**: its "
        "bioimage.io model support builds a pixel classifier from the zip.",
        "- **Python**: `bioimageio predict` / `bioimageio.core.predict(model='MODEL.zip', inputs=...)`; "
        "with unetkit installed, `unetkit predict MODEL.zip IMAGES --out OUT` runs it exactly as the "
        "training run (tiling, object scale, masks in the training encoding).",
        "",
        "## Validation",
        "",
        f"The test input ({TEST_INPUT_FILE}, cut from {sample_from}) and its output ({TEST_OUTPUT_FILE}) "
        "were computed by unetkit itself (its normalisation, one pass of the network, its activation); "
        "`bioimageio test MODEL.zip` recomputes them with every weight format. The network's accuracy "
        "is that of the training run: see its evaluation report (`unetkit evaluate`).",
        "",
    ]
    return "\n".join(lines)


def _output_meaning(predictor: Predictor, restored_scaled: bool) -> str:
    """One sentence for the README: how to read the output."""
    if predictor.task == "restoration":
        if restored_scaled:
            return "The restored image, on the input's intensity scale."
        return "The restored image, on the normalised scale of the input (see below)."
    if predictor.model.config.num_classes == 1:
        labels = "Labels: foreground where the probability is above 0.5."
    else:
        labels = "Labels: the channel of the highest probability."
    if predictor.target == "three_class":
        labels += " unetkit calls interior and border foreground."
    return labels


def _default_name(run_dir: Path, predictor: Predictor) -> str:
    kind = "restoration" if predictor.task == "restoration" else (
        "binary segmentation" if predictor.num_classes == 2 else f"{predictor.num_classes}-class segmentation"
    )
    stem = re.sub(r"[^A-Za-z0-9 _().-]", "-", run_dir.resolve().name)[:60] or "run"
    return f"unetkit {predictor.dims}D U-Net {kind} ({stem})"


def _default_description(predictor: Predictor) -> str:
    config = predictor.model.config
    what = "restores images (image to image)" if predictor.task == "restoration" else (
        f"segments images into {predictor.num_classes} classes per pixel"
    )
    return (
        f"A {config.dims}D {config.architecture} trained with unetkit that {what}; "
        f"{config.in_channels} input channel(s), {config.padding} padding."
    )[:1024]


def _tensor_axes(dims: int, channels: list[str], size: Any, output_of: Optional[int] = None) -> list[dict]:
    """The axes of the input (``size``: ``{"min", "step"}``) or of the output (``output_of``: the size
    offset from the input's, ``-2 * context``)."""
    axes: list[dict[str, Any]] = [{"type": "batch"}, {"type": "channel", "channel_names": channels}]
    for axis in spatial_axes(dims):
        if output_of is None:
            axes.append({"type": "space", "id": axis, "size": size})
        else:
            axes.append({"type": "space", "id": axis,
                         "size": {"tensor_id": INPUT_ID, "axis_id": axis, "offset": output_of}})
    return axes


def _rdf(predictor: Predictor, contract: dict[str, Any], options: PackageOptions, name: str, description: str,
         output_range: tuple[Optional[float], Optional[float]]) -> dict[str, Any]:
    """The ``rdf.yaml`` content (files named relative to the package)."""
    from bioimageio.spec.model.v0_5 import ModelDescr

    dims, rule = predictor.dims, contract["valid_sizes"]
    task = predictor.task
    output_id = OUTPUT_IDS[task]
    torch_version = torch.__version__.split("+")[0]
    authors = options.authors or ["unknown"]
    tags = ["unetkit", "u-net", "pytorch", f"{dims}d",
            "semantic-segmentation" if task == "segmentation" else "restoration", *options.tags]
    return {
        "type": "model",
        "format_version": ModelDescr.implemented_format_version,
        "name": name,
        "description": description,
        "authors": [{"name": a} for a in authors],
        "cite": [Citation(*UNET_PAPER).to_rdf()] + [c.to_rdf() for c in options.cite],
        "license": options.license,
        "documentation": {"source": README_FILE},
        "covers": [{"source": COVER_FILE}],
        "tags": list(dict.fromkeys(tags)),
        "inputs": [{
            "id": INPUT_ID,
            "description": "the image, channel first",
            "axes": _tensor_axes(dims, input_channel_names(predictor.in_channels),
                                 {"min": rule["first"], "step": rule["step"]}),
            "data": {"type": "float32"},
            "test_tensor": {"source": TEST_INPUT_FILE},
            "sample_tensor": {"source": SAMPLE_FILES[0]},
            "preprocessing": preprocessing(predictor.normalize, dims),
        }],
        "outputs": [{
            "id": output_id,
            "description": "per-class probabilities" if task == "segmentation" else "the restored image",
            "axes": _tensor_axes(dims, output_channel_names(predictor), None, output_of=-2 * rule["context"]),
            "data": {"type": "float32", "range": list(output_range)},
            "test_tensor": {"source": TEST_OUTPUT_FILE},
            "sample_tensor": {"source": SAMPLE_FILES[1]},
            "postprocessing": postprocessing(task, predictor.model.config.num_classes, predictor.normalize),
        }],
        "weights": {
            "pytorch_state_dict": {
                "source": WEIGHTS_FILES["pytorch_state_dict"],
                "architecture": {
                    "import_from": __name__,
                    "callable": "build_network",
                    "kwargs": contract["model"],
                },
                "pytorch_version": torch_version,
            },
            "torchscript": {"source": WEIGHTS_FILES["torchscript"], "pytorch_version": torch_version,
                            "parent": "pytorch_state_dict"},
            "onnx": {"source": WEIGHTS_FILES["onnx"], "opset_version": ONNX_OPSET,
                     "parent": "pytorch_state_dict"},
        },
        "config": {"unetkit": {"package_version": PACKAGE_CONFIG_VERSION, "contract": contract}},
    }


def _check_run(run_dir: Path) -> None:
    """Raise ``FileNotFoundError`` / ``ValueError`` (naming the file and the fix) for a missing RUN folder
    or a generation run."""
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir} not found: give the RUN folder written by `unetkit train` (it holds model.json and "
            "model.safetensors)"
        )
    if _run_task(run_dir) == "generation":
        raise ValueError(
            f"{run_dir / RUN_CONFIG_FILE}: {run_dir} is a generation (diffusion) run; a bioimage.io model "
            "maps an input image to an output in one network call and cannot express the sampling loop "
            "(noise schedule, DDIM / DDPM steps, guidance). Export its denoiser with `unetkit export "
            f"{run_dir} --format onnx` (the contract describes the sampling) or draw samples with "
            "`unetkit generate`"
        )


def export_bioimageio_run(
    run_dir: PathLike, out: Optional[PathLike] = None, options: Optional[PackageOptions] = None
) -> Path:
    """Write the best model of a RUN folder as a bioimage.io model package (zip) to ``out``
    (default ``RUN/model.bioimageio.zip``); returns the path.

    The package is validated with ``bioimageio.spec`` before it is written, and written atomically
    (a temporary file renamed over ``out``). Each limitation of the format that matters for this run
    is issued as a :class:`BioimageioExportWarning` and written in the package's README. Raises
    ``FileNotFoundError`` for a missing run and ``ValueError`` for one the format cannot express
    (generation runs, flows or distance targets, super-resolution, an upper normalisation percentile of
    1 or less: :func:`refusal`), each naming the run and the fix.
    """
    import tifffile

    from .inference import Predictor
    from .utils.atomic import atomic_path

    run_dir = Path(run_dir)
    options = options or PackageOptions()
    _check_run(run_dir)
    predictor = Predictor.from_run(run_dir, device="cpu")
    reason = refusal(predictor)
    if reason is not None:
        raise ValueError(
            f"{run_dir} cannot be a bioimage.io package: {reason}. Export it with `unetkit export {run_dir} "
            "--format onnx` (its contract describes the whole pipeline) and run it with unetkit"
        )
    try:
        from bioimageio.spec import ValidationContext, build_description, save_bioimageio_package
        from bioimageio.spec.model.v0_5 import ModelDescr
    except ImportError as exc:
        raise ValueError(
            f"--format {FORMAT} needs the bioimageio.spec package ({exc}); install it with "
            "`pip install 'unetkit[bioimageio]'`"
        ) from exc
    notes = export_notes(predictor)
    contract = build_contract(
        predictor.model, predictor.classes, predictor.normalize, predictor.object_diameter,
        predictor.target, predictor.task, predictor.scale, membrane_class=predictor.membrane_class,
    )
    # The run's prediction precision travels with its PyTorch weights (the other formats compute in float32).
    contract["precision"] = {
        "default": predictor.precision_setting, "bf16_label_agreement": predictor.label_agreement,
    }
    image, sample_from = _sample_image(run_dir, predictor, options.sample)
    test_input = cut_test_image(image, predictor.model)
    test_output = reference_output(predictor, test_input)
    name = options.name or _default_name(run_dir, predictor)
    description = options.description or _default_description(predictor)
    output_range = (0.0, 1.0) if predictor.task == "segmentation" else (None, None)
    rdf = _rdf(predictor, contract, options, name, description, output_range)
    model = predictor.model.eval()
    target = Path(out) if out is not None else run_dir / "model.bioimageio.zip"
    with tempfile.TemporaryDirectory(prefix="unetkit-bioimageio-") as work:
        folder = Path(work)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        torch.save(state, folder / WEIGHTS_FILES["pytorch_state_dict"])
        (folder / WEIGHTS_FILES["torchscript"]).write_bytes(torchscript_bytes(model, contract))
        (folder / WEIGHTS_FILES["onnx"]).write_bytes(onnx_bytes(model, contract))
        np.save(folder / TEST_INPUT_FILE, test_input[None])
        np.save(folder / TEST_OUTPUT_FILE, test_output[None])
        for sample_file, array in zip(SAMPLE_FILES, (test_input, test_output)):
            tifffile.imwrite(folder / sample_file, array[None], photometric="minisblack")
        (folder / COVER_FILE).write_bytes(_cover(test_input, test_output, predictor))
        (folder / README_FILE).write_text(_readme(name, description, predictor, contract, rdf, notes,
                                                  sample_from))
        context = ValidationContext(root=folder, perform_io_checks=True, log_warnings=False)
        descr = build_description(rdf, context=context)
        if not isinstance(descr, ModelDescr):
            summary = descr.validation_summary.format()
            if "index_key" in summary:  # bioimageio.spec's serializer fails under pydantic 2.14
                raise ValueError(
                    "bioimageio.spec cannot validate packages with the pydantic installed here (2.14 or "
                    "later): run `pip install 'pydantic<2.14'` (the bioimageio extra pins it)"
                )
            raise RuntimeError(
                "unetkit wrote a bioimage.io description that bioimageio.spec rejects (a unetkit bug):\n"
                + summary
            )
        with atomic_path(target) as tmp:
            save_bioimageio_package(descr, output_path=tmp)
    if not options.authors:
        notes.append("no --author given: the package names 'unknown' as its author; give --author before "
                     "sharing it on bioimage.io")
    for note in notes:
        warnings.warn(note, BioimageioExportWarning, stacklevel=2)
    return target


# ---------------------------------------------------------------------------------------------
# Reading a package unetkit wrote (``unetkit predict MODEL.zip``).


def is_bioimageio_package(path: PathLike) -> bool:
    """Whether ``path`` is a zip file with an ``rdf.yaml`` (or ``bioimageio.yaml``) at its top."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name in RDF_NAMES for name in archive.namelist())


def _yaml12_loader() -> Any:
    """PyYAML's safe loader reading floats as YAML 1.2 does: bioimageio.spec writes ``1e-06`` (no dot),
    which YAML 1.1 reads as a string."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent_float = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent_float, list("-+.0123456789"))
    return Loader


def read_package(path: PathLike) -> dict[str, Any]:
    """The ``rdf.yaml`` of a bioimage.io package as a dict. Raises ``ModelLoadError`` (a ``ValueError``)
    for a damaged package or one that unetkit did not write (no ``config.unetkit``)."""
    import yaml

    from .checkpoint import ModelLoadError

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            entry = next(i for i in archive.infolist() if i.filename in RDF_NAMES)
            if entry.file_size > MAX_RDF_BYTES:
                raise ValueError(f"{entry.filename} is {entry.file_size} bytes, more than {MAX_RDF_BYTES}")
            rdf = yaml.load(archive.read(entry), Loader=_yaml12_loader())
    except (OSError, ValueError, StopIteration, zipfile.BadZipFile, yaml.YAMLError) as exc:
        raise ModelLoadError(
            f"{path} is not a readable bioimage.io package ({type(exc).__name__}: {exc}); export it again "
            f"with `unetkit export RUN --format {FORMAT}`"
        ) from exc
    unetkit = (rdf.get("config") or {}).get("unetkit") if isinstance(rdf, dict) else None
    if not isinstance(unetkit, dict) or not isinstance(unetkit.get("contract"), dict):
        raise ModelLoadError(
            f"{path} is a bioimage.io package that unetkit did not write (its rdf.yaml has no "
            "config.unetkit): run it with bioimage.io tools (`bioimageio predict`, deepImageJ, ilastik, "
            "QuPath)"
        )
    if unetkit.get("package_version") != PACKAGE_CONFIG_VERSION:
        raise ModelLoadError(
            f"{path}: config.unetkit.package_version is {unetkit.get('package_version')!r}, this unetkit "
            f"reads {PACKAGE_CONFIG_VERSION}: export it again with this unetkit"
        )
    return rdf


def _package_bytes(archive: zipfile.ZipFile, rdf: dict[str, Any], fmt: str, limit: int, path: Path) -> bytes:
    """The bytes of the ``fmt`` weights file of the package, at most ``limit`` bytes."""
    from .checkpoint import ModelLoadError

    entry = (rdf.get("weights") or {}).get(fmt) or {}
    source = entry.get("source")
    if not isinstance(source, str) or source not in archive.namelist():
        raise ModelLoadError(
            f"{path}: its rdf.yaml names no {fmt} weights file inside the package; export it again"
        )
    info = archive.getinfo(source)
    if info.file_size > limit:
        raise ModelLoadError(
            f"{path}: {source} is {info.file_size} bytes, more than the network in config.unetkit needs "
            f"({limit}): the package is damaged or crafted; export it again"
        )
    return archive.read(info)


def _state_dict_model(data: bytes, config: ModelConfig, path: Path) -> nn.Module:
    """The network of ``config`` with the state dict ``data`` (``torch.load(weights_only=True)``: no code
    runs), checked against the network's tensors."""
    from .checkpoint import ModelLoadError

    with torch.device("meta"):
        model = build_model(config)
    expected = model.state_dict()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError... for a damaged file
        raise ModelLoadError(f"{path}: its state dict is not readable ({exc}); export it again") from exc
    if not isinstance(state, dict) or set(state) != set(expected) or any(
        tuple(state[k].shape) != tuple(v.shape) for k, v in expected.items()
    ):
        raise ModelLoadError(
            f"{path}: its state dict does not match the network in config.unetkit; export it again"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, assign=True)
    return model.eval()


def package_predictor(path: PathLike, backend: str = "torch", **kwargs: Any) -> Any:
    """A :class:`~unetkit.inference.Predictor` for a bioimage.io package unetkit wrote: the network from
    its ``backend`` weights (``"torch"``: the state dict; ``"onnxruntime"``: the ONNX file;
    ``"torchscript"``: the TorchScript file, which runs code stored in it), normalisation, classes,
    object scale, target and task from ``config.unetkit`` unless given in ``kwargs`` (the other keyword
    arguments go to the Predictor). Predicts as ``unetkit predict RUN`` does for the run it came from."""
    from .checkpoint import ModelLoadError
    from .data.classes import ClassInfo
    from .data.normalize import NormalizeConfig
    from .inference import Predictor

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    path = Path(path)
    rdf = read_package(path)
    contract = rdf["config"]["unetkit"]["contract"]
    try:
        config = ModelConfig.from_dict(contract.get("model"))
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: the network in its config.unetkit is not valid ({exc}); export it again"
        ) from exc
    with torch.device("meta"):
        parameters = sum(p.numel() for p in build_model(config).parameters())
    limit = 8 * parameters + (1 << 20)  # float32 weights (stored as float64 at most) plus headers
    fmt = BACKEND_WEIGHTS[backend]
    with zipfile.ZipFile(path) as archive:
        data = _package_bytes(archive, rdf, fmt, limit, path)
    if backend == "torch":
        model: Any = _state_dict_model(data, config, path)
    else:
        runner = _onnx_session(data) if backend == "onnxruntime" else _load_torchscript(io.BytesIO(data))
        model = ExportedModel(backend, path, contract, runner)
    scale = contract.get("object_scale")
    defaults = {
        "normalize": NormalizeConfig.from_dict(contract["normalize"]) if contract.get("normalize") else None,
        "classes": ClassInfo.from_dict(contract["classes"]) if contract.get("classes") else None,
        "object_diameter": float(scale["diameter"]) if scale else None,
        "target": contract.get("target"),
        "membrane_class": contract.get("membrane_class"),
        "task": contract.get("task"),
        "scale": contract.get("scale"),
    }
    if backend == "torch":
        precision = contract.get("precision") or {}
        defaults["precision"] = precision.get("default")
        defaults["label_agreement"] = precision.get("bf16_label_agreement")
    for key, value in defaults.items():
        if kwargs.get(key) is None:
            kwargs[key] = value
    return Predictor(model, **kwargs)

