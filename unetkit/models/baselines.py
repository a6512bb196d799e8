"""The baselines the U-Net paper and its tutorials compare against.

* :class:`PlainFCN`: a stack of full-resolution 3x3 convs ending in a per-pixel (1x1)
  classifier, with no pooling at all: small receptive field, full resolution.
* :class:`EncoderDecoder`: the U-Net's pooling and upsampling path (nearest, max-unpooling
  or transposed conv) without skip connections: large receptive field, but fine detail
  must survive the bottleneck. Comparing it with :class:`~unetkit.models.UNet` on the same
  data shows what the skips buy.

Both use the U-Net's constructor conventions, so the same training command takes any of them.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .blocks import NORMS, PADDINGS, check_option, conv_nd, norm_layer
from .config import ModelConfig
from .sizes import SizeRules
from .unet import Dropout, UNet, init_he_normal


class EncoderDecoder(UNet):
    """A U-Net without skip connections (SegNet-style when ``up_mode="unpool"``)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        dims: int = 2,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "same",
        up_mode: str = "nearest",
        norm: Optional[str] = None,
        dropout: Dropout = 0.0,
    ) -> None:
        super().__init__(
            in_channels, num_classes, dims=dims, depth=depth, base_channels=base_channels,
            padding=padding, up_mode=up_mode, norm=norm, dropout=dropout, skip_connections=False,
        )


class PlainFCN(nn.Module, SizeRules):
    """``num_layers`` 3x3 conv + ReLU layers at full resolution, then a 1x1 classifier.

    Input ``(N, in_channels, *S)``, logits ``(N, num_classes, *S')`` with ``S' = S`` for
    same padding and ``S' = S - 2 * num_layers`` for valid padding.
    """

    __jit_unused_properties__ = ["config", "spatial_dims"]

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        dims: int = 2,
        base_channels: int = 64,
        num_layers: int = 10,
        padding: str = "same",
        norm: Optional[str] = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_option("padding", padding, PADDINGS)
        check_option("norm", norm, NORMS)
        if not isinstance(dropout, (int, float)):
            raise ValueError("PlainFCN takes a single dropout rate")
        self.dims = dims
        self.padding = padding
        self.num_layers = num_layers
        self._config = ModelConfig(
            architecture="plain_fcn", in_channels=in_channels, num_classes=num_classes,
            dims=dims, depth=0, base_channels=base_channels, padding=padding, norm=norm,
            dropout=float(dropout), num_layers=num_layers,
        )
        conv = conv_nd(dims)
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(num_layers):
            layers += [
                conv(channels, base_channels, 3, padding=1 if padding == "same" else 0,
                     bias=norm is None),
                norm_layer(norm, base_channels, dims),
                nn.ReLU(inplace=True),
            ]
            channels = base_channels
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(conv(channels, num_classes, 1))
        self.body = nn.Sequential(*layers)
        init_he_normal(self)

    @property
    def config(self) -> ModelConfig:
        return self._config

    @property
    def spatial_dims(self) -> int:
        return self.dims

    def axis_output_size(self, size: int) -> Optional[int]:
        out = size if self.padding == "same" else size - 2 * self.num_layers
        return out if out >= 1 and size >= 1 else None

    def axis_min_input(self) -> int:
        return 1

    def size_rule(self) -> str:
        if self.padding == "same":
            return "Any size of at least 1 pixel is valid."
        return f"Valid padding needs sizes above {2 * self.num_layers}."

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *S)`` -> logits ``(N, num_classes, *S')``."""
        return self.body(x)
