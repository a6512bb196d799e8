"""Safe model files: weights as safetensors, the architecture as JSON beside them.

Nothing here unpickles: loading a shared model cannot run code. Loading is bounded by the weights
file: the config's fields are bounded (:meth:`~unetkit.models.ModelConfig.check`), the network is
built on the meta device (no memory, no initialisation), its tensors are checked against the
safetensors header, and only then are the weights read into it. The weights file also records the
config it was saved with, so a save killed between the two files is caught on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .models import AnyModelConfig, build_model, model_config_from_dict
from .utils.atomic import atomic_path, atomic_write_json

WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model.json"
CONFIG_METADATA_KEY = "unetkit.model"
"""The key of the safetensors metadata entry holding the ``model.json`` the weights were saved with."""
_SHOWN = 3  # mismatching tensors named in an error


class ModelLoadError(ValueError):
    """A model folder, RUN folder or exported file that cannot be loaded; the message names the file
    and what to do."""


def save_model(model: nn.Module, directory: Union[str, Path]) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (atomically, the weights first;
    the weights' metadata holds the config too, so that :func:`load_model` can tell a torn pair)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={CONFIG_METADATA_KEY: json.dumps(config)})
    atomic_write_json(directory / MODEL_CONFIG_FILE, config)
    return directory


def load_model(directory: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """Rebuild the network from ``model.json`` and load ``model.safetensors`` (eval mode).

    Raises ``FileNotFoundError`` for a missing file and :class:`ModelLoadError` (a ``ValueError``)
    for anything else that keeps the folder from loading, naming the file; nothing is allocated
    beyond what the weights file holds.
    """
    directory = Path(directory)
    config_path = directory / MODEL_CONFIG_FILE
    weights_path = directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a model folder holds {MODEL_CONFIG_FILE} and {WEIGHTS_FILE} "
                "(written by unetkit.checkpoint.save_model or unetkit train)"
            )
    config = _read_config(config_path)
    try:
        with torch.device("meta"):
            model = build_model(config)
    except Exception as exc:  # the constructors' checks: ValueError, and whatever torch raises
        raise ModelLoadError(f"{config_path} describes no network unetkit can build: {exc}") from exc
    expected = model.state_dict()
    _check_weights(weights_path, config_path, config, expected)
    state = load_file(str(weights_path), device=str(map_location))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, assign=True)
    return model.eval()


def _read_config(path: Path) -> AnyModelConfig:
    try:
        return model_config_from_dict(json.loads(path.read_text()))
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{path} is not a valid model config: {exc} (save the model again, or take the folder "
            "from its source again)"
        ) from exc


def _check_weights(path: Path, config_path: Path, config: AnyModelConfig, expected: dict[str, Any]) -> None:
    """Check the safetensors header of ``path`` (read without the tensors) against the network's
    tensors ``expected`` and the config it was saved with against ``config``."""
    try:
        with safe_open(str(path), framework="pt") as weights:
            metadata = weights.metadata() or {}
            shapes = {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()}
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{path} is not a readable safetensors file: {exc}") from exc
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [
        f"{k} {list(shapes[k])} (the network's: {list(v.shape)})"
        for k, v in expected.items() if k in shapes and shapes[k] != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{label}: {', '.join(items[:_SHOWN])}{' ...' if len(items) > _SHOWN else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("other shapes", wrong))
            if items
        ]
        raise ModelLoadError(
            f"{path} does not match the network in {config_path} ({'; '.join(problems)}): the two files "
            "come from different models; copy both from the same run"
        )
    if CONFIG_METADATA_KEY in metadata:
        try:
            saved_with = model_config_from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path} holds an invalid model config in its metadata: {exc}") from exc
        if saved_with != config:
            raise ModelLoadError(
                f"{path} and {config_path} are from different saves (a save interrupted between the two "
                "files?): save the model again, or copy both files from the same run"
            )
