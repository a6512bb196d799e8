"""The U-Net family: the model, its blocks and the baselines it is compared with."""

from __future__ import annotations

from typing import Any, Union

from torch import nn

from .baselines import EncoderDecoder, PlainFCN
from .blocks import ConvBlock, Down, Up
from .config import ARCHITECTURES, ModelConfig
from .diffusion import DiffusionUNet, DiffusionUNetConfig
from .unet import UNet

AnyModelConfig = Union[ModelConfig, DiffusionUNetConfig]


def model_config_from_dict(data: dict[str, Any]) -> AnyModelConfig:
    """The config in a ``model.json``: the diffusion U-Net's, or the U-Net family's; checked against
    the bounds of each field (a ``ValueError`` names the field)."""
    if isinstance(data, dict) and data.get("architecture") == "diffusion_unet":
        return DiffusionUNetConfig.from_dict(data)
    return ModelConfig.from_dict(data)


def build_model(config: AnyModelConfig) -> nn.Module:
    """Build the network a config describes (the inverse of ``model.config``); a field out of its
    bounds (:meth:`ModelConfig.check`) raises ``ValueError``, so no run writes a ``model.json`` that
    loading refuses."""
    if isinstance(config, DiffusionUNetConfig):
        return DiffusionUNet(config)
    config.check()
    common = dict(
        dims=config.dims, base_channels=config.base_channels, padding=config.padding,
        norm=config.norm, dropout=config.dropout,
    )
    if config.architecture == "unet":
        return UNet(config.in_channels, config.num_classes, depth=config.depth,
                    up_mode=config.up_mode, residual=config.residual, space_to_depth=config.space_to_depth,
                    **common)
    if config.residual or config.space_to_depth != 1:
        raise ValueError(
            f"model.residual and model.space_to_depth are U-Net options; {config.architecture!r} has neither"
        )
    if config.architecture == "encoder_decoder":
        return EncoderDecoder(config.in_channels, config.num_classes, depth=config.depth,
                              up_mode=config.up_mode, **common)
    return PlainFCN(config.in_channels, config.num_classes, num_layers=config.num_layers, **common)


__all__ = [
    "ARCHITECTURES", "AnyModelConfig", "ConvBlock", "DiffusionUNet", "DiffusionUNetConfig", "Down",
    "EncoderDecoder", "ModelConfig", "PlainFCN", "UNet", "Up", "build_model", "model_config_from_dict",
]
