"""Safe model files: weights as safetensors, the architecture as JSON beside them.

Nothing here unpickles: loading a shared model cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .models import build_model, model_config_from_dict
from .utils.atomic import atomic_path, atomic_write_json

WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model.json"


def save_model(model: nn.Module, directory: Union[str, Path]) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(directory / MODEL_CONFIG_FILE, model.config.to_dict())
    return directory


def load_model(directory: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """Rebuild the network from ``model.json`` and load ``model.safetensors`` (eval mode)."""
    directory = Path(directory)
    config_path = directory / MODEL_CONFIG_FILE
    weights_path = directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a model folder holds {MODEL_CONFIG_FILE} and {WEIGHTS_FILE} "
                "(written by unetkit.checkpoint.save_model or unetkit train)"
            )
    try:
        config = model_config_from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{config_path} is not a valid model config: {exc}") from exc
    model = build_model(config)
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{weights_path} does not match the network in {config_path}: {exc}") from exc
    return model.eval()
