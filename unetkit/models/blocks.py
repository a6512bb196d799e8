"""Building blocks of the U-Net family, for 2D and 3D.

Every block takes ``dims`` (2 or 3) and works on tensors shaped ``(N, C, H, W)``
or ``(N, C, D, H, W)``. ``padding="valid"`` is the 2015 paper (unpadded 3x3
convs, each conv trims one pixel per side); ``padding="same"`` keeps the size.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

PADDINGS = ("valid", "same")
UP_MODES = ("transpose", "bilinear", "nearest", "unpool")
NORMS = (None, "batch", "instance", "group")


def check_option(name: str, value: object, options: tuple) -> None:
    """Raise ``ValueError`` naming the choices when ``value`` is not one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def conv_nd(dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[_check_dims(dims)]


def _check_dims(dims: int) -> int:
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    return dims


def norm_layer(norm: Optional[str], channels: int, dims: int) -> nn.Module:
    """The normalisation after each conv: none, batch, instance (affine) or group norm."""
    if norm is None:
        return nn.Identity()
    if norm == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    if norm == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels, affine=True)
    if norm == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def center_crop(x: torch.Tensor, spatial: list[int]) -> torch.Tensor:
    """Crop the trailing spatial axes of ``x`` (N, C, *S) to ``spatial``, keeping the centre."""
    for axis, target in enumerate(spatial):
        size = x.shape[axis + 2]
        if size != target:
            x = x.narrow(axis + 2, (size - target) // 2, target)
    return x


class ConvBlock(nn.Module):
    """Two 3x3 (3x3x3) convolutions, each followed by optional norm and ReLU.

    Dropout, when set, sits between the two convolutions, as in the microscopy
    tutorial's Keras model. With ``padding="valid"`` each conv trims 1 pixel per side,
    so the block maps size ``s`` to ``s - 4``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        dims: int = 2,
        padding: str = "same",
        norm: Optional[str] = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_option("padding", padding, PADDINGS)
        conv = conv_nd(dims)
        pad = 1 if padding == "same" else 0
        bias = norm is None
        self.block = nn.Sequential(
            conv(in_channels, out_channels, 3, padding=pad, bias=bias),
            norm_layer(norm, out_channels, dims),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            conv(out_channels, out_channels, 3, padding=pad, bias=bias),
            norm_layer(norm, out_channels, dims),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Down(nn.Module):
    """2x2 (2x2x2) max-pool with stride 2, then a :class:`ConvBlock`.

    Returns ``(features, pool_indices)``; the indices are only computed when
    ``return_indices`` is set (for max-unpooling in the decoder), otherwise an
    empty tensor is returned in their place.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        dims: int = 2,
        padding: str = "same",
        norm: Optional[str] = None,
        dropout: float = 0.0,
        return_indices: bool = False,
    ) -> None:
        super().__init__()
        self.dims = dims
        self.return_indices = return_indices
        self.conv = ConvBlock(
            in_channels, out_channels, dims=dims, padding=padding, norm=norm, dropout=dropout
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.return_indices:
            if self.dims == 2:
                pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
            else:
                pooled, indices = F.max_pool3d(x, 2, 2, return_indices=True)
        else:
            pooled = F.max_pool2d(x, 2, 2) if self.dims == 2 else F.max_pool3d(x, 2, 2)
            indices = torch.empty(0, dtype=torch.long, device=x.device)
        return self.conv(pooled), indices


def crop_pool_indices(indices: torch.Tensor, target: list[int]) -> torch.Tensor:
    """Centre-crop max-pool indices ``(N, C, *S)`` to ``target`` and re-address them.

    Pool indices are flat positions in the pooled layer's input plane (size ``2*S``).
    With valid padding the decoder map is smaller than the pooled map, so both the
    index grid and the plane it points into are cropped: an index at plane position
    ``p`` becomes ``p - 2*offset`` in a plane of size ``2*target``.
    """
    pooled = list(indices.shape[2:])
    if pooled == target:
        return indices
    cropped = center_crop(indices, target)
    # Split the flat plane index into per-axis coordinates (last axis fastest) ...
    coords: list[torch.Tensor] = []
    remaining = cropped
    for axis in range(len(pooled) - 1, -1, -1):
        plane_size = 2 * pooled[axis]
        coords.insert(0, remaining % plane_size)
        remaining = torch.div(remaining, plane_size, rounding_mode="floor")
    # ... shift each by twice the crop offset, and flatten again in the smaller plane.
    flat = torch.zeros_like(cropped)
    for axis in range(len(pooled)):
        offset = 2 * ((pooled[axis] - target[axis]) // 2)
        flat = flat * (2 * target[axis]) + (coords[axis] - offset)
    return flat


def max_unpool(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Inverse of a 2x2 (2x2x2) stride-2 max-pool: ``(N, C, *S)`` -> ``(N, C, *2S)``.

    Each value goes back to the flat position its maximum came from, zeros elsewhere.
    Same result as ``F.max_unpool2d/3d``, written as a scatter so that it also traces,
    scripts and exports (the functional version fails under ``torch.jit.trace`` in 3D).
    """
    n, c = x.shape[0], x.shape[1]
    out_spatial = [2 * s for s in x.shape[2:]]
    plane = 1
    for s in out_spatial:
        plane *= s
    out = x.new_zeros(n, c, plane)
    out = out.scatter(2, indices.flatten(2), x.flatten(2))
    return out.view([n, c] + out_spatial)


class Up(nn.Module):
    """Upsample by 2, halve the channels, concatenate the (cropped) skip, then a :class:`ConvBlock`.

    ``up_mode``:
      * ``"transpose"``: the paper's 2x2 up-convolution (stride 2) that halves the channels;
      * ``"bilinear"`` / ``"nearest"``: interpolation (trilinear in 3D), then a 1x1 conv
        that halves the channels (1x1 keeps the size arithmetic of the transposed conv);
      * ``"unpool"``: a 1x1 conv that halves the channels (so they match the pooled
        encoder map whose indices are used), then max-unpooling that puts each value back
        at the position its maximum came from, zeros elsewhere (SegNet's decoder).

    ``skip_channels=0`` builds the decoder block of a net without skip connections.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        skip_channels: Optional[int] = None,
        dims: int = 2,
        padding: str = "same",
        up_mode: str = "transpose",
        norm: Optional[str] = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_option("up_mode", up_mode, UP_MODES)
        self.dims = dims
        self.up_mode = up_mode
        conv = conv_nd(dims)
        if up_mode == "transpose":
            transpose = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]
            self.up = transpose(in_channels, out_channels, 2, stride=2)
        else:
            self.up = conv(in_channels, out_channels, 1)
        if up_mode in ("bilinear", "nearest"):
            self.interpolation = "nearest" if up_mode == "nearest" else (
                "bilinear" if dims == 2 else "trilinear"
            )
        else:
            self.interpolation = ""
        skip = out_channels if skip_channels is None else skip_channels
        self.use_skip = skip > 0
        self.conv = ConvBlock(
            out_channels + skip, out_channels, dims=dims, padding=padding, norm=norm, dropout=dropout
        )

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor, indices: torch.Tensor
    ) -> torch.Tensor:
        if self.up_mode == "transpose":
            x = self.up(x)
        elif self.up_mode == "unpool":
            x = self.up(x)
            x = max_unpool(x, crop_pool_indices(indices, list(x.shape[2:])))
        else:
            if self.interpolation == "nearest":
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            else:
                x = F.interpolate(x, scale_factor=2.0, mode=self.interpolation, align_corners=False)
            x = self.up(x)
        if self.use_skip:
            x = torch.cat([center_crop(skip, list(x.shape[2:])), x], dim=1)
        return self.conv(x)
