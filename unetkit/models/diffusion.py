"""The diffusion U-Net of DDPM, improved DDPM and ADM, for 2D and 3D.

The noise-prediction network of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models")
with the changes of Nichol & Dhariwal 2021 ("Improved DDPM", "Diffusion Models Beat GANs"):

* a sinusoidal time-step embedding followed by a two-layer MLP (width ``4 * base_channels``);
* residual blocks (GroupNorm, SiLU, 3x3 conv) that take the embedding through
  "scale-shift norm": ``norm(h) * (1 + scale) + shift``;
* multi-head self-attention at chosen levels and in the middle;
* ADM skip connections: every encoder block's output is stored and concatenated, in reverse
  order, to the input of a decoder block (the decoder has ``num_res_blocks + 1`` blocks per level);
* the last conv of every residual branch, every attention output projection and the output
  conv start at zero, so the untrained network predicts exactly zero.

Optional conditioning, all added to the time embedding unless noted: a class label (with an
extra "no class" index for classifier-free guidance), a vector (e.g. a text embedding), a
noise level for conditioning augmentation (Cascaded Diffusion, Ho et al. 2021), and an image
concatenated to the input (super-resolution, inpainting, image-to-image).

Tensors are ``(N, C, H, W)`` in 2D and ``(N, C, D, H, W)`` in 3D. ``forward`` never branches on
tensor values, so ``torch.jit.trace`` and ``torch.onnx.export`` of a fixed-signature wrapper work.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import conv_nd
from .config import check_fields, check_flag, check_int, check_ints, check_rate

ARCHITECTURE = "diffusion_unet"
NOISE_LEVEL_SCALE = 1000.0
"""A noise level in ``[0, 1]`` is multiplied by this before its sinusoidal embedding (as a time step)."""
DIFFUSION_BOUNDS = {
    "in_channels": (1, 1024), "out_channels": (1, 1024), "dims": (2, 3), "base_channels": (1, 1024),
    "num_res_blocks": (1, 16), "attention_head_channels": (1, 1024), "num_classes": (0, 100_000),
    "cond_dim": (0, 65536), "cond_channels": (0, 1024), "groups": (1, 1024),
}
"""The range of each integer field of a :class:`DiffusionUNetConfig` (0 = off where allowed)."""
MAX_LEVELS = 8
MAX_CHANNEL_MULT = 64


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) time steps, as in DDPM / ADM.

    ``t``: ``(N,)`` float or integer time steps. Returns ``(N, dim)`` float32:
    ``[cos(t * f_0), ..., cos(t * f_{h-1}), sin(t * f_0), ..., sin(t * f_{h-1})]`` with
    ``h = dim // 2`` and ``f_i = max_period ** (-i / h)``; an odd ``dim`` gets a zero last column.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1)
    )
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def group_count(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``groups`` (GroupNorm's group count)."""
    return next(g for g in range(min(groups, channels), 0, -1) if channels % g == 0)


def head_count(channels: int, head_channels: int) -> int:
    """Attention heads for ``channels``: ``channels // head_channels`` (at least 1), lowered to a divisor."""
    wanted = max(1, channels // head_channels)
    return next(h for h in range(wanted, 0, -1) if channels % h == 0)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


@dataclass
class DiffusionUNetConfig:
    """Everything needed to rebuild a :class:`DiffusionUNet` (saved with every checkpoint).

    ``channel_mults`` gives the width of each level as ``base_channels * mult`` (one entry per
    level, top to bottom); ``attention_levels`` lists level indices (0 = full resolution) with
    self-attention after each residual block. ``num_classes > 0`` adds a class embedding with
    ``num_classes + 1`` rows, the last meaning "no class" (classifier-free guidance).
    ``cond_dim > 0`` adds a conditioning vector ``(N, cond_dim)``; ``cond_channels > 0`` a
    conditioning image concatenated to the input; ``noise_level_input`` a per-sample noise level
    in ``[0, 1]`` (conditioning augmentation). ``groups`` is the GroupNorm group count (lowered to
    the largest divisor of each channel count).
    """

    architecture: str = ARCHITECTURE
    in_channels: int = 1
    out_channels: int = 1
    dims: int = 2
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = ()
    attention_head_channels: int = 32
    dropout: float = 0.0
    num_classes: int = 0
    cond_dim: int = 0
    cond_channels: int = 0
    noise_level_input: bool = False
    groups: int = 32

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    def check(self) -> DiffusionUNetConfig:
        """Raise ``ValueError`` naming the first field of the wrong type or out of its bounds
        (:data:`DIFFUSION_BOUNDS`; at most :data:`MAX_LEVELS` levels of multipliers up to
        :data:`MAX_CHANNEL_MULT`); returns ``self``."""
        what = "diffusion U-Net config"
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"{what} field architecture must be {ARCHITECTURE!r}, got {self.architecture!r}")
        check_ints(what, self, DIFFUSION_BOUNDS)
        mults, levels = self.channel_mults, self.attention_levels
        if not isinstance(mults, tuple) or not 1 <= len(mults) <= MAX_LEVELS:
            raise ValueError(f"{what} field channel_mults must list 1 to {MAX_LEVELS} levels, got {mults!r}")
        for mult in mults:
            check_int(what, "channel_mults", mult, 1, MAX_CHANNEL_MULT)
        if not isinstance(levels, tuple):
            raise ValueError(f"{what} field attention_levels must be a list of levels, got {levels!r}")
        for level in levels:
            check_int(what, "attention_levels", level, 0, len(mults) - 1)
        check_rate(what, "dropout", self.dropout)
        check_flag(what, "noise_level_input", self.noise_level_input)
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionUNetConfig:
        """The inverse of :meth:`to_dict` (lists become tuples), checked (:meth:`check`); unknown keys
        raise ``ValueError``."""
        check_fields(cls, data, "diffusion U-Net config")
        values = dict(data)
        for key in ("channel_mults", "attention_levels"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values).check()


class ResBlock(nn.Module):
    """ADM residual block conditioned on the embedding by scale-shift norm.

    ``(N, in_channels, *S)``, ``(N, emb_dim)`` -> ``(N, out_channels, *S)``:
    ``skip(x) + conv0(dropout(silu(norm(h) * (1 + scale) + shift)))`` with
    ``h = conv(silu(norm(x)))`` and ``(scale, shift) = linear(silu(emb))``. ``conv0`` starts at
    zero, so the block starts as its skip (identity, or a 1x1 conv when the width changes).
    """

    def __init__(
        self, in_channels: int, out_channels: int, emb_dim: int, *, dims: int, dropout: float, groups: int
    ) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.dims = dims
        self.in_layers = nn.Sequential(
            nn.GroupNorm(group_count(in_channels, groups), in_channels),
            nn.SiLU(),
            conv(in_channels, out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = nn.GroupNorm(group_count(out_channels, groups), out_channels)
        self.out_layers = nn.Sequential(
            nn.SiLU(),
            nn.Dropout(dropout),
            _zero(conv(out_channels, out_channels, 3, padding=1)),
        )
        self.skip = nn.Identity() if in_channels == out_channels else conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)
        for _ in range(self.dims):
            e = e.unsqueeze(-1)
        scale, shift = e.chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, with a residual connection.

    ``(N, C, *S)`` -> ``(N, C, *S)``: GroupNorm, a 1x1 conv to queries, keys and values,
    scaled dot-product attention per head over the ``prod(S)`` positions, and a 1x1 output
    projection that starts at zero. ``emb`` is accepted (and ignored) so that every block of the
    network has the same signature.
    """

    def __init__(self, channels: int, *, dims: int, head_channels: int, groups: int) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.heads = head_count(channels, head_channels)
        self.norm = nn.GroupNorm(group_count(channels, groups), channels)
        self.qkv = conv(channels, 3 * channels, 1)
        self.proj_out = _zero(conv(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, -1)
        # (N, 3, heads, head_dim, L) -> three (N, heads, L, head_dim)
        q, k, v = qkv.permute(1, 0, 2, 4, 3).unbind(0)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(x.shape)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Strided 3x3 (3x3x3) conv, stride 2: ``(N, C, *S)`` -> ``(N, C, *S/2)``."""

    def __init__(self, channels: int, *, dims: int) -> None:
        super().__init__()
        self.conv = conv_nd(dims)(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 (3x3x3) conv: ``(N, C, *S)`` -> ``(N, C, *2S)``."""

    def __init__(self, channels: int, *, dims: int) -> None:
        super().__init__()
        self.conv = conv_nd(dims)(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EmbedSequential(nn.ModuleList):
    """Blocks applied in turn, each called as ``block(x, emb)``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x, emb)
        return x


class DiffusionUNet(nn.Module):
    """The DDPM / ADM noise-prediction U-Net (see the module docstring).

    ``forward(x, t, ...)`` maps a noisy image ``(N, in_channels, *S)`` and time steps ``(N,)`` to
    ``(N, out_channels, *S)`` (the predicted noise, or v, or x0: the network does not care).
    Every spatial size must be a multiple of :attr:`size_multiple`.
    """

    def __init__(self, config: DiffusionUNetConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.dims = config.dims
        self.in_channels = config.in_channels
        self.num_classes = config.num_classes
        self.cond_dim = config.cond_dim
        self.cond_channels = config.cond_channels
        self.noise_level_input = config.noise_level_input
        base = config.base_channels
        emb_dim = 4 * base
        self.emb_dim = emb_dim
        conv = conv_nd(config.dims)

        self.time_embed = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(config.num_classes + 1, emb_dim) if config.num_classes > 0 else None
        self.cond_proj = nn.Linear(config.cond_dim, emb_dim) if config.cond_dim > 0 else None
        self.noise_level_embed = (
            nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            if config.noise_level_input
            else None
        )

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(
                cin, cout, emb_dim, dims=config.dims, dropout=config.dropout, groups=config.groups
            )

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(
                ch, dims=config.dims, head_channels=config.attention_head_channels, groups=config.groups
            )

        levels = len(config.channel_mults)
        self.input_conv = conv(config.in_channels + config.cond_channels, base, 3, padding=1)
        ch = base
        skip_channels = [ch]
        self.down_blocks = nn.ModuleList()
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.num_res_blocks):
                block = EmbedSequential([res(ch, base * mult)])
                ch = base * mult
                if level in config.attention_levels:
                    block.append(attn(ch))
                self.down_blocks.append(block)
                skip_channels.append(ch)
            if level != levels - 1:
                self.down_blocks.append(EmbedSequential([Downsample(ch, dims=config.dims)]))
                skip_channels.append(ch)

        self.middle = EmbedSequential([res(ch, ch), attn(ch), res(ch, ch)])

        self.up_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            mult = config.channel_mults[level]
            for i in range(config.num_res_blocks + 1):
                block = EmbedSequential([res(ch + skip_channels.pop(), base * mult)])
                ch = base * mult
                if level in config.attention_levels:
                    block.append(attn(ch))
                if level != 0 and i == config.num_res_blocks:
                    block.append(Upsample(ch, dims=config.dims))
                self.up_blocks.append(block)

        self.out = nn.Sequential(
            nn.GroupNorm(group_count(ch, config.groups), ch),
            nn.SiLU(),
            _zero(conv(ch, config.out_channels, 3, padding=1)),
        )

    @property
    def size_multiple(self) -> int:
        """Every spatial size must be a multiple of this (``2 ** (levels - 1)``)."""
        return 2 ** (len(self.config.channel_mults) - 1)

    @torch.jit.unused
    def _check_inputs(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: Optional[torch.Tensor],
        cond: Optional[torch.Tensor],
        cond_image: Optional[torch.Tensor],
        noise_level: Optional[torch.Tensor],
    ) -> None:
        """Shape checks (never tensor values), skipped while tracing or scripting."""
        axes = "N, C, D, H, W" if self.dims == 3 else "N, C, H, W"
        if x.dim() != self.dims + 2:
            raise ValueError(f"expected x as a {self.dims + 2}D tensor ({axes}), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        spatial = tuple(x.shape[2:])
        m = self.size_multiple
        if any(s % m for s in spatial):
            raise ValueError(
                f"every spatial size must be a multiple of {m} (2 ** (len(channel_mults) - 1)), "
                f"got {spatial}"
            )
        n = x.shape[0]
        if tuple(t.shape) != (n,):
            raise ValueError(f"expected t of shape ({n},), got {tuple(t.shape)}")
        if y is not None:
            if self.num_classes == 0:
                raise ValueError("y was given but the model has no class input (num_classes=0)")
            if tuple(y.shape) != (n,):
                raise ValueError(f"expected y of shape ({n},), got {tuple(y.shape)}")
        if cond is not None:
            if self.cond_dim == 0:
                raise ValueError("cond was given but the model has no conditioning vector (cond_dim=0)")
            if tuple(cond.shape) != (n, self.cond_dim):
                raise ValueError(f"expected cond of shape ({n}, {self.cond_dim}), got {tuple(cond.shape)}")
        if self.cond_channels > 0:
            expected = (n, self.cond_channels) + spatial
            if cond_image is None:
                raise ValueError(
                    f"cond_image of shape {expected} is required (cond_channels={self.cond_channels})"
                )
            if tuple(cond_image.shape) != expected:
                raise ValueError(f"expected cond_image of shape {expected}, got {tuple(cond_image.shape)}")
        elif cond_image is not None:
            raise ValueError("cond_image was given but the model has no image input (cond_channels=0)")
        if noise_level is not None:
            if not self.noise_level_input:
                raise ValueError("noise_level was given but the model has noise_level_input=False")
            if tuple(noise_level.shape) != (n,):
                raise ValueError(f"expected noise_level of shape ({n},), got {tuple(noise_level.shape)}")

    def embed(
        self,
        t: torch.Tensor,
        y: Optional[torch.Tensor] = None,
        cond: Optional[torch.Tensor] = None,
        noise_level: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The embedding every residual block sees: ``(N,)`` steps (and conditioning) -> ``(N, 4 * base)``."""
        base = self.config.base_channels
        dtype = self.time_embed[0].weight.dtype
        n = t.shape[0]
        emb = self.time_embed(timestep_embedding(t, base).to(dtype))
        if self.label_emb is not None:
            if y is None:
                y = torch.full((n,), self.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.label_emb(y)
        if self.cond_proj is not None:
            if cond is None:
                cond = torch.zeros(n, self.cond_dim, dtype=dtype, device=t.device)
            emb = emb + self.cond_proj(cond.to(dtype))
        if self.noise_level_embed is not None:
            if noise_level is None:
                noise_level = torch.zeros(n, dtype=torch.float32, device=t.device)
            level = timestep_embedding(noise_level.to(torch.float32) * NOISE_LEVEL_SCALE, base)
            emb = emb + self.noise_level_embed(level.to(dtype))
        return emb

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: Optional[torch.Tensor] = None,
        cond: Optional[torch.Tensor] = None,
        cond_image: Optional[torch.Tensor] = None,
        noise_level: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Predict from a noisy image.

        ``x``: ``(N, in_channels, *S)``; ``t``: ``(N,)`` time steps (float or long; embedded
        sinusoidally, fractions allowed); ``y``: ``(N,)`` long class indices in ``[0, num_classes]``
        (``num_classes`` = no class; ``None`` = no class for all); ``cond``: ``(N, cond_dim)`` or
        ``None`` (zeros); ``cond_image``: ``(N, cond_channels, *S)``, required when
        ``cond_channels > 0``; ``noise_level``: ``(N,)`` in ``[0, 1]`` or ``None`` (zeros).
        Returns ``(N, out_channels, *S)``.
        """
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self._check_inputs(x, t, y, cond, cond_image, noise_level)
        emb = self.embed(t, y, cond, noise_level)
        if cond_image is not None:
            x = torch.cat([x, cond_image.to(x.dtype)], dim=1)
        h = self.input_conv(x)
        skips = [h]
        for block in self.down_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for block in self.up_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


__all__ = [
    "ARCHITECTURE", "DIFFUSION_BOUNDS", "NOISE_LEVEL_SCALE", "AttentionBlock", "DiffusionUNet",
    "DiffusionUNetConfig", "Downsample", "EmbedSequential", "ResBlock", "Upsample", "group_count",
    "head_count", "timestep_embedding",
]
