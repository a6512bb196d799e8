"""The U-Net of Ronneberger, Fischer and Brox (2015), in 2D and 3D, valid or same padding."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from .blocks import NORMS, PADDINGS, UP_MODES, ConvBlock, Down, Up, center_crop, check_option, conv_nd
from .config import ModelConfig
from .sizes import SizeRules

Dropout = Union[float, Sequence[float]]


def per_level_dropout(dropout: Dropout, depth: int) -> tuple[float, ...]:
    """Expand ``dropout`` to one rate per level (``depth + 1`` levels, top to bottom)."""
    if isinstance(dropout, (int, float)):
        return (float(dropout),) * (depth + 1)
    rates = tuple(float(d) for d in dropout)
    if len(rates) != depth + 1:
        raise ValueError(f"dropout needs one rate per level ({depth + 1}), got {len(rates)}")
    return rates


def init_he_normal(module: nn.Module) -> None:
    """The paper's initialisation: Gaussian weights with std sqrt(2 / fan_in), zero bias."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class UNet(nn.Module, SizeRules):
    """U-Net: contracting path, expanding path with skip connections, 1x1 head.

    Args:
        in_channels: channels of the input image.
        num_classes: output channels (1 = binary with sigmoid, K >= 2 = softmax over K).
        dims: 2 for images ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)``.
        depth: number of 2x2 max-pool steps (the paper: 4).
        base_channels: channels at the top level, doubled per level (the paper: 64).
        padding: ``"valid"`` (paper: unpadded convs, skips centre-cropped) or ``"same"``.
        up_mode: ``"transpose"``, ``"bilinear"``, ``"nearest"`` or ``"unpool"``.
        norm: ``None``, ``"batch"``, ``"instance"`` or ``"group"`` after each conv.
        dropout: one rate, or one per level (top to bottom); used in encoder and decoder
            blocks of that level, between the two convs.
        skip_connections: ``False`` gives the encoder-decoder baseline without skips.
        residual: add the input (centre-cropped for valid padding) to the head's output, so the
            network learns a correction of its input (restoration); needs ``num_classes ==
            in_channels``.
        space_to_depth: 2D same-padding nets: run the U-Net on the image rearranged into
            ``space_to_depth**2`` times the channels at ``1/space_to_depth`` of the resolution
            (pixel unshuffle, as FFDNet) and rearrange the output back (pixel shuffle): about
            ``space_to_depth**2`` times fewer operations per pixel. 1 = off.

    ``forward`` returns logits ``(N, num_classes, *out_spatial)``; the activation lives in
    :func:`unetkit.activation.logits_to_probabilities`.
    """

    __jit_unused_properties__ = ["config", "in_channels", "num_classes", "spatial_dims"]

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        dims: int = 2,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "valid",
        up_mode: str = "transpose",
        norm: Optional[str] = None,
        dropout: Dropout = 0.0,
        skip_connections: bool = True,
        residual: bool = False,
        space_to_depth: int = 1,
    ) -> None:
        super().__init__()
        check_option("padding", padding, PADDINGS)
        check_option("up_mode", up_mode, UP_MODES)
        check_option("norm", norm, NORMS)
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if space_to_depth < 1 or (space_to_depth > 1 and (dims != 2 or padding != "same")):
            raise ValueError(
                f"space_to_depth {space_to_depth}: must be 1, or >= 2 for a 2D same-padding network"
            )
        if residual and num_classes != in_channels:
            raise ValueError(
                f"a residual network outputs as many channels as it takes ({in_channels}), got {num_classes}"
            )
        self.dims = dims
        self.depth = depth
        self.padding = padding
        self.up_mode = up_mode
        self.skip_connections = skip_connections
        self.residual = residual
        self.space_to_depth = space_to_depth
        rates = per_level_dropout(dropout, depth)
        self._config = ModelConfig(
            architecture="unet" if skip_connections else "encoder_decoder",
            in_channels=in_channels,
            num_classes=num_classes,
            dims=dims,
            depth=depth,
            base_channels=base_channels,
            padding=padding,
            up_mode=up_mode,
            norm=norm,
            dropout=rates if len(set(rates)) > 1 else rates[0],
            residual=residual,
            space_to_depth=space_to_depth,
        )
        channels = [base_channels * 2**level for level in range(depth + 1)]
        common = dict(dims=dims, padding=padding, norm=norm)
        packed = space_to_depth**dims
        self.inc = ConvBlock(in_channels * packed, channels[0], dropout=rates[0], **common)
        self.downs = nn.ModuleList(
            Down(
                channels[level - 1],
                channels[level],
                dropout=rates[level],
                return_indices=up_mode == "unpool",
                **common,
            )
            for level in range(1, depth + 1)
        )
        self.ups = nn.ModuleList(
            Up(
                channels[level + 1],
                channels[level],
                skip_channels=None if skip_connections else 0,
                up_mode=up_mode,
                dropout=rates[level],
                **common,
            )
            for level in reversed(range(depth))
        )
        self.head = conv_nd(dims)(channels[0], num_classes * packed, 1)
        init_he_normal(self)
        if residual:  # start as the identity: the correction is learnt from zero
            nn.init.zeros_(self.head.weight)

    @classmethod
    def paper(cls) -> UNet:
        """Ronneberger et al. 2015, Fig. 1: 1 channel in, 2 classes, 64..1024, valid, up-conv.

        23 conv layers, 31,030,658 parameters, 572x572 in, 388x388 out.
        """
        return cls(1, 2, depth=4, base_channels=64, padding="valid", up_mode="transpose")

    @classmethod
    def tutorial(cls) -> UNet:
        """The "Python for Microscopists" Keras tutorial (seed 001): 128x128x3 in, 16..256, same
        padding, dropout 0.1/0.1/0.2/0.2/0.3 from top to bottom, one sigmoid output channel.
        """
        return cls(
            3, 1, depth=4, base_channels=16, padding="same", up_mode="transpose",
            dropout=(0.1, 0.1, 0.2, 0.2, 0.3),
        )

    @property
    def config(self) -> ModelConfig:
        """The :class:`ModelConfig` that rebuilds this network with :func:`build_model`."""
        return self._config

    @property
    def in_channels(self) -> int:
        return self._config.in_channels

    @property
    def num_classes(self) -> int:
        return self._config.num_classes

    @property
    def spatial_dims(self) -> int:
        return self.dims

    def axis_output_size(self, size: int) -> Optional[int]:
        if self.padding == "same":
            return size if size > 0 and size % (2**self.depth * self.space_to_depth) == 0 else None
        for _ in range(self.depth):
            size -= 4
            if size < 2 or size % 2:
                return None
            size //= 2
        size -= 4
        if size < 1:
            return None
        for _ in range(self.depth):
            size = 2 * size - 4
            if size < 1:
                return None
        return size

    def axis_min_input(self) -> int:
        return 2**self.depth * self.space_to_depth if self.padding == "same" else 1

    def size_rule(self) -> str:
        if self.padding == "same":
            multiple = 2**self.depth * self.space_to_depth
            return f"Same-padding nets need every size divisible by 2**depth * space_to_depth = {multiple}."
        return (
            "Valid-padding nets need every 2x2 max-pool to get an even size: "
            f"sizes {self.valid_input_sizes(1, 300)[:4]}... (step {2**self.depth})."
        )

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.dims + 2:
            raise ValueError(
                f"expected a {self.dims + 2}D tensor (N, C, {'D, ' if self.dims == 3 else ''}H, W), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        self.check_input_size(tuple(x.shape[2:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *S)`` -> logits ``(N, num_classes, *output_size(S))``."""
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self._check_input(x)
        image = x
        if self.space_to_depth > 1:
            x = nn.functional.pixel_unshuffle(x, self.space_to_depth)
        x = self.inc(x)
        skips = [x]
        indices: list[torch.Tensor] = []
        for down in self.downs:
            x, idx = down(x)
            skips.append(x)
            indices.append(idx)
        for level, up in enumerate(self.ups):
            x = up(x, skips[-level - 2], indices[-level - 1])
        out = self.head(x)
        if self.space_to_depth > 1:
            out = nn.functional.pixel_shuffle(out, self.space_to_depth)
        if self.residual:
            out = out + center_crop(image, list(out.shape[2:]))
        return out
