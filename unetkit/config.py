"""The training configuration: one dataclass per concern, saved as JSON or YAML with every run.

``TrainConfig`` holds ``data``, ``model``, ``augment``, ``loss``, ``optim``, ``schedule``,
``budget`` and ``seed``. Any field can be changed by a dotted name, from the command line
(``--model.base-channels 32``, dashes or underscores) or from a partial config file; values are
converted to the field's type, and an unknown name is an error that lists the closest names.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

from .data.blindspot import BLIND_SPOT_MODES
from .data.instances import TARGETS
from .data.normalize import NormalizeConfig
from .data.restoration_patches import RESTORATION_MODES
from .data.transforms import AugmentConfig
from .losses import LOSSES, LossConfig
from .models import ModelConfig
from .models.diffusion import DiffusionUNetConfig
from .utils.atomic import atomic_write_text

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "poly")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
#: Metrics where lower is better; every other monitored metric is maximised.
LOWER_IS_BETTER = ("loss", "val_loss", "pixel_error", "rand_error", "hd95", "mse", "mae")
PRESETS = ("auto", "paper", "tutorial")
#: What a run learns (:mod:`unetkit.tasks`): the seam between the shared trainer and the task.
TASKS = ("segmentation", "restoration", "generation")
RESTORATION_LOSSES = ("l1", "l2")
#: What a generation run is conditioned on (``None``: the classes of the subfolders, if any).
CONDITIONS = ("class", "low_res", "mask", "none")
NOISE_SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "v")


@dataclass
class DataConfig:
    """Where the images are and how patches are drawn from them.

    ``train``/``val``: dataset folders (``images/`` + ``masks/``); without ``val`` a fraction
    ``val_fraction`` of the training samples is held out (seeded). ``patch_size``: side of the
    square (cubic) training patch given to the network. ``patches_per_epoch``: ``None`` covers
    the training pixels about once per epoch. ``weight_map``: compute the paper's border weight
    map (``w0``, ``sigma``) for ``loss.name = "weighted_ce"``. ``target``: ``"semantic"`` (the
    mask's classes), ``"three_class"`` (background / interior / border from instance labels),
    ``"flows"`` or ``"distance"`` (the foreground and a flow field or a distance map from instance
    labels, :data:`unetkit.data.instances.TARGETS`).
    ``object_diameter``: train and predict with every image resized so that its objects' median
    diameter is this many pixels (for data whose object sizes vary; ``None`` = each image at its
    own scale; see :mod:`unetkit.data.scale`). ``membrane_class``: the class that outlines the
    objects as a thin connected network (0 in ISBI 2012; set by the plan, see
    :mod:`unetkit.data.membrane`): objects then come from the membrane route of
    :mod:`unetkit.instances` by default.
    """

    train: Optional[str] = None
    val: Optional[str] = None
    val_fraction: float = 0.2
    patch_size: int = 256
    batch_size: int = 4
    patches_per_epoch: Optional[int] = None
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    target: str = "semantic"
    weight_map: bool = False
    w0: float = 10.0
    sigma: float = 5.0
    foreground_oversample: float = 0.33
    num_workers: int = 0
    object_diameter: Optional[float] = None
    membrane_class: Optional[int] = None


@dataclass
class RestorationConfig:
    """What a restoration run (``task = "restoration"``) learns to undo.

    ``mode``: ``"pairs"`` (``DATA/inputs/`` + ``DATA/targets/``, e.g. low/high-SNR acquisitions),
    ``"denoise"`` (clean images, degraded on the fly by ``noise``: fresh noise every epoch),
    ``"super_resolve"`` (clean images, bicubic-downscaled by ``scale``), and for noisy images only
    ``"neighbor2neighbor"`` (two neighbour sub-images of each noisy patch, one the input and one the
    target) or ``"noise2void"`` (blind-spot training, ``blind_spot_fraction`` of the pixels replaced
    by a neighbour within ``blind_spot_radius``, ``blind_spot_mode`` ``"uniform"`` or ``"median"``).
    ``noise``: a :func:`~unetkit.data.degrade.parse_noise` spec (``gaussian:25``, ``gaussian:0-55``,
    ``poisson:30``, ``poisson-gaussian:30,10``) on the images' intensity scale. ``scale``: output
    pixels per input pixel along each axis (super-resolution; 1 otherwise). ``data_range``: the
    range PSNR and SSIM are computed with (``None``: 255 for 8-bit targets, 65535 for 16-bit, the
    target's own range for float images).
    """

    mode: str = "denoise"
    noise: str = "gaussian:25"
    scale: int = 1
    blind_spot_fraction: float = 0.002
    blind_spot_radius: int = 2
    blind_spot_mode: str = "uniform"
    data_range: Optional[float] = None


@dataclass
class GenerationConfig:
    """What a generation run (``task = "generation"``, a diffusion model) learns and how.

    ``condition``: ``"class"`` (one subfolder of DATA per class; the names become the classes),
    ``"none"`` (unconditional), ``"low_res"`` (SR3: the image downscaled by ``scale``, upscaled
    again and concatenated to the noisy input: a super-resolution stage of a cascade) or ``"mask"``
    (DATA with ``images/`` + ``masks/``: images generated for a label mask); ``None`` picks
    ``"class"`` when DATA has class subfolders, ``"none"`` otherwise. ``schedule``: the noise
    schedule (``"cosine"`` or ``"linear"``) over ``timesteps`` steps; ``prediction``: what the
    network predicts, the noise (``"eps"``) or ``"v"``. ``label_dropout``: fraction of training
    images whose class is replaced by "no class", which classifier-free guidance needs.
    ``condition_noise``: conditioning augmentation of a low-resolution condition (Gaussian noise
    of a level drawn uniformly from [0, condition_noise] on the [-1, 1] scale; the level is an
    input of the network and chosen again at sampling). ``intensity``: the data's (low, high)
    intensities mapped to [-1, 1] (``None``: 0-255 for 8-bit images, 0-65535 for 16-bit, the
    training images' range for float images; recorded in ``config.json``). ``classes``: the class
    names (the subfolders; recorded in ``config.json``). ``sample_steps``: DDIM
    steps of the grid drawn after each epoch. ``network``: the diffusion U-Net.
    """

    condition: Optional[str] = None
    scale: int = 4
    schedule: str = "cosine"
    timesteps: int = 1000
    prediction: str = "eps"
    label_dropout: float = 0.1
    condition_noise: float = 0.2
    intensity: Optional[tuple[float, float]] = None
    classes: Optional[list[str]] = None
    sample_steps: int = 50
    network: DiffusionUNetConfig = field(default_factory=DiffusionUNetConfig)


@dataclass
class OptimConfig:
    """Optimiser: ``"adam"`` (the tutorial), ``"adamw"`` or ``"sgd"`` (the paper, momentum 0.99).

    ``grad_clip``: maximum gradient norm (``None`` = off); ``accumulate``: batches whose
    gradients are summed before one optimiser step; ``ema``: decay of an exponential moving
    average of the weights (e.g. 0.99, about the last 100 steps), which is then the model that is
    validated and saved (``None`` = off).
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.99
    weight_decay: float = 0.0
    grad_clip: Optional[float] = 12.0
    accumulate: int = 1
    ema: Optional[float] = None


@dataclass
class ScheduleConfig:
    """Learning-rate schedule over the run: linear warm-up for ``warmup_steps`` optimiser steps,
    then ``"constant"``, ``"cosine"`` (down to ``final_lr_fraction * lr``) or ``"poly"``
    (``(1 - progress) ** power``). With ``budget.max_minutes`` the progress is the larger of the
    step fraction and the time fraction, so the schedule ends when the time does.
    """

    name: str = "cosine"
    warmup_steps: int = 20
    final_lr_fraction: float = 0.01
    power: float = 0.9


@dataclass
class BudgetConfig:
    """When training stops and which epoch is kept.

    ``epochs``: maximum epochs; ``max_minutes``: wall-clock budget (training ends cleanly with
    the best model saved); ``patience``: early stopping after that many validations without
    improvement of ``monitor`` (``None`` = off); ``monitor``: the validation metric that picks
    the best checkpoint (``dice``, ``iou``, ``mean_iou``, ``pixel_error``, ``rand_error``,
    ``val_loss``...; errors and losses are minimised, scores maximised).
    """

    epochs: int = 50
    max_minutes: Optional[float] = None
    patience: Optional[int] = None
    monitor: str = "dice"
    val_every: int = 1


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``RUN/config.json``.

    ``out``: the run folder; ``device``: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``;
    ``precision``: ``"auto"`` trains in bfloat16 mixed precision where the hardware computes it
    natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX), float16 with loss scaling on older
    GPUs, float32 elsewhere; ``"fp32"`` always float32; ``"bf16"`` bfloat16 even when emulated;
    ``task``: what the run learns (``"segmentation"``, ``"restoration"`` or ``"generation"``, see
    :mod:`unetkit.tasks`; ``restoration`` and ``generation`` hold those tasks' settings);
    ``threads``: CPU threads for PyTorch (``None`` = all cores); ``num_samples``: validation
    images drawn as overlays in ``RUN/samples/``; ``tensorboard``: also log to TensorBoard when
    it is installed.
    """

    task: str = "segmentation"
    data: DataConfig = field(default_factory=DataConfig)
    restoration: RestorationConfig = field(default_factory=RestorationConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(
            depth=4, base_channels=16, padding="same", norm="batch", num_classes=1
        )
    )
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    seed: int = 0
    out: str = "run"
    device: str = "auto"
    precision: str = "auto"
    threads: Optional[int] = None
    num_samples: int = 4
    tensorboard: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a (possibly partial) nested dict; missing fields keep their defaults."""
        return merge_dict(cls(), data)

    def validate(self) -> TrainConfig:
        """Check the choices that are strings; raises ``ValueError`` naming the field and the options."""
        # A diffusion model's loss is fixed (the mean squared error of its prediction).
        losses = {"restoration": RESTORATION_LOSSES, "generation": (self.loss.name,)}.get(self.task, LOSSES)
        checks = [
            ("task", self.task, TASKS),
            ("optim.name", self.optim.name, OPTIMIZERS),
            ("schedule.name", self.schedule.name, SCHEDULES),
            (f"loss.name (for the {self.task} task)", self.loss.name, losses),
            ("data.target", self.data.target, TARGETS),
            ("restoration.mode", self.restoration.mode, RESTORATION_MODES),
            ("restoration.blind_spot_mode", self.restoration.blind_spot_mode, BLIND_SPOT_MODES),
            ("generation.condition", self.generation.condition or "none", CONDITIONS),
            ("generation.schedule", self.generation.schedule, NOISE_SCHEDULES),
            ("generation.prediction", self.generation.prediction, PREDICTIONS),
            ("device", self.device, DEVICES),
            ("precision", self.precision, PRECISIONS),
        ]
        for name, value, options in checks:
            if value not in options:
                raise ValueError(f"{name} must be one of {', '.join(options)}; got {value!r}")
        positive = [
            ("data.patch_size", self.data.patch_size),
            ("data.batch_size", self.data.batch_size),
            ("optim.accumulate", self.optim.accumulate),
            ("budget.epochs", self.budget.epochs),
            ("budget.val_every", self.budget.val_every),
            ("restoration.scale", self.restoration.scale),
            ("restoration.blind_spot_radius", self.restoration.blind_spot_radius),
            ("generation.scale", self.generation.scale),
            ("generation.timesteps", self.generation.timesteps),
            ("generation.sample_steps", self.generation.sample_steps),
        ]
        for name, value in positive:
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.data.patches_per_epoch is not None and self.data.patches_per_epoch < self.data.batch_size:
            raise ValueError(
                f"data.patches_per_epoch {self.data.patches_per_epoch} is less than one batch "
                f"(data.batch_size {self.data.batch_size}): raise it or lower the batch size"
            )
        if not 0.0 <= self.data.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.data.val_fraction}")
        if not 0.0 <= self.generation.label_dropout < 1.0:
            raise ValueError(
                f"generation.label_dropout must be in [0, 1), got {self.generation.label_dropout}"
            )
        if not 0.0 <= self.generation.condition_noise <= 1.0:
            raise ValueError(
                f"generation.condition_noise must be in [0, 1], got {self.generation.condition_noise}"
            )
        if not 0.0 < self.restoration.blind_spot_fraction < 1.0:
            raise ValueError(
                "restoration.blind_spot_fraction must be in (0, 1), "
                f"got {self.restoration.blind_spot_fraction}"
            )
        if self.restoration.mode not in ("pairs", "super_resolve") and self.restoration.scale != 1:
            raise ValueError(
                f"restoration.scale {self.restoration.scale} needs restoration.mode super_resolve "
                "(or pairs whose targets are that much larger)"
            )
        if self.loss.name == "weighted_ce" and not self.data.weight_map:
            raise ValueError(
                "loss.name 'weighted_ce' needs the border weight map: add --data.weight-map true"
            )
        return self


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_names(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """Every settable dotted field name, e.g. ``["data.train", ..., "model.base_channels", ...]``."""
    names = []
    for name, tp in _hints(cls).items():
        if name not in {f.name for f in dataclasses.fields(cls)}:
            continue
        if dataclasses.is_dataclass(tp):
            names += field_names(tp, f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


def _unknown(name: str) -> ValueError:
    known = field_names()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    close += [k for k in known if k.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1] and k not in close]
    hint = (
        f"; did you mean {', '.join(close)}?" if close else "; `unetkit train --print-config` lists them all"
    )
    return ValueError(f"unknown config field {name!r}{hint}")


_NONE_WORDS = ("none", "null", "~", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _convert(value: Any, tp: Any, name: str) -> Any:
    """Coerce ``value`` (text from the command line, or a JSON/YAML value) to the field type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if _is_union(tp):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in _NONE_WORDS)
        ):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, name)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{name}: cannot use {value!r} ({'; '.join(errors)})")
    if origin in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            value = (
                yaml.safe_load(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
            )
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} expects a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, name) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.lower() in _TRUE_WORDS
        raise ValueError(f"{name} expects true or false, got {value!r}")
    if tp is int:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, str))
            or (isinstance(value, str) and not value.strip().lstrip("+-").isdigit())
        ):
            raise ValueError(f"{name} expects an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{name} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} expects a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} expects text, got {value!r}")
        return value
    raise TypeError(f"{name}: unsupported field type {tp!r}")


def _set(obj: Any, parts: Sequence[str], value: Any, full_name: str) -> Any:
    """A copy of the dataclass ``obj`` with the dotted field ``parts`` set to ``value``."""
    hints = _hints(type(obj))
    key = parts[0]
    if key not in hints or key not in {f.name for f in dataclasses.fields(obj)}:
        raise _unknown(full_name)
    tp = hints[key]
    if dataclasses.is_dataclass(tp):
        current = getattr(obj, key)
        if len(parts) == 1:
            if not isinstance(value, Mapping):
                raise ValueError(
                    f"{full_name} is a section; set its fields, e.g. {field_names(tp, full_name + '.')[0]}"
                )
            for sub, sub_value in value.items():
                current = _set(current, [sub], sub_value, f"{full_name}.{sub}")
            new = current
        else:
            new = _set(current, parts[1:], value, full_name)
    else:
        if len(parts) > 1:
            raise _unknown(full_name)
        new = _convert(value, tp, full_name)
    return dataclasses.replace(obj, **{key: new})


def normalize_name(name: str) -> str:
    """``"--model.base-channels"`` -> ``"model.base_channels"``."""
    return name.lstrip("-").replace("-", "_")


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted-name overrides applied (values converted to field types)."""
    for name, value in overrides.items():
        key = normalize_name(name)
        config = _set(config, key.split("."), value, key)
    return config


def merge_dict(config: TrainConfig, data: Mapping[str, Any]) -> TrainConfig:
    """A copy of ``config`` with a nested (partial) dict, e.g. a config file, laid over it."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a config must be a mapping of sections, got {type(data).__name__}")
    for key, value in data.items():
        config = _set(config, [normalize_name(key)], value, normalize_name(key))
    return config


#: Top-level fields also settable as ``--name VALUE`` (``out`` is the commands' own ``--out`` option).
TOP_LEVEL_FIELDS = ("seed", "device", "threads", "num_samples", "tensorboard")


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate config fields (``--section.field VALUE``, ``--seed 3``...) from the other arguments,
    before argparse sees them, so that a field's value is never taken for a positional argument."""
    rest: list[str] = []
    fields: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = normalize_name(arg.split("=", 1)[0]) if arg.startswith("--") else ""
        if name and ("." in name or name in TOP_LEVEL_FIELDS):
            take = 1 if "=" in arg or i + 1 >= len(argv) else 2
            fields += argv[i:i + take]
            i += take
        else:
            rest.append(arg)
            i += 1
    return rest, fields


def parse_override_args(args: Sequence[str]) -> dict[str, str]:
    """``["--model.depth", "3", "--optim.lr=1e-4"]`` -> ``{"model.depth": "3", "optim.lr": "1e-4"}``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}: config fields are given as --section.field VALUE")
        if "=" in arg:
            name, value = arg.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args) or (args[i + 1].startswith("--") and not _is_number(args[i + 1])):
                raise ValueError(f"{arg} needs a value, e.g. {arg} VALUE")
            name, value = arg, args[i + 1]
            i += 2
        out[normalize_name(name)] = value
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_config_file(path: Union[str, Path]) -> dict[str, Any]:
    """The nested dict in a ``.json`` or ``.yaml``/``.yml`` config file (may be partial)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(
            f"{path} is not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: {exc}"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} must hold a mapping of sections (data, model, ...), got {type(data).__name__}"
        )
    return data


def load_config(path: Union[str, Path], base: Optional[TrainConfig] = None) -> TrainConfig:
    """Lay the config file at ``path`` over ``base`` (default: the defaults)."""
    try:
        return merge_dict(base or TrainConfig(), read_config_file(path)).validate()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def dump_config(config: TrainConfig, fmt: str = "json") -> str:
    """The config as JSON or YAML text."""
    data = config.to_dict()
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    return json.dumps(data, indent=2) + "\n"


def save_config(config: TrainConfig, path: Union[str, Path]) -> Path:
    """Write the config (YAML for ``.yaml``/``.yml``, JSON otherwise), atomically."""
    path = Path(path)
    fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
    atomic_write_text(path, dump_config(config, fmt))
    return path


def preset_config(name: str) -> TrainConfig:
    """The named starting point: ``"paper"`` (Ronneberger et al. 2015: valid-padding 64-wide U-Net,
    SGD momentum 0.99, pixel-weighted cross-entropy with the border weight map, batch 1, large
    tiles) or ``"tutorial"`` (the microscopy Keras tutorial: same padding, 16 wide, dropout,
    Adam, binary cross-entropy, 128-pixel patches). ``"auto"`` is planned from the data by
    :func:`unetkit.training.planner.plan_dataset` and starts here from the defaults."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    config = TrainConfig()
    if name == "paper":
        config = dataclasses.replace(
            config,
            model=ModelConfig(depth=4, base_channels=64, padding="valid", up_mode="transpose", num_classes=2),
            data=dataclasses.replace(config.data, patch_size=572, batch_size=1, weight_map=True),
            loss=LossConfig(name="weighted_ce", class_weights=None),
            optim=OptimConfig(name="sgd", lr=0.01, momentum=0.99, grad_clip=None),
            schedule=ScheduleConfig(name="constant", warmup_steps=0),
        )
    elif name == "tutorial":
        config = dataclasses.replace(
            config,
            model=ModelConfig(
                depth=4,
                base_channels=16,
                padding="same",
                up_mode="transpose",
                num_classes=1,
                dropout=(0.1, 0.1, 0.2, 0.2, 0.3),
            ),
            data=dataclasses.replace(config.data, patch_size=128, batch_size=16),
            loss=LossConfig(name="bce"),
            optim=OptimConfig(name="adam", lr=1e-3, grad_clip=None),
            schedule=ScheduleConfig(name="constant", warmup_steps=0),
        )
    return config


def monitor_mode(metric: str) -> str:
    """``"min"`` for errors, distances and losses, ``"max"`` for scores."""
    return "min" if metric in LOWER_IS_BETTER or metric.endswith("_error") else "max"
