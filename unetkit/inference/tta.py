"""Test-time augmentation: the flips and 90-degree rotations of the image plane.

In 2D the 8 symmetries of the square (4 rotations, each with and without a flip); in 3D
the same 8 in the ``(H, W)`` plane, each with and without a flip along ``D`` (16): volumes
are often anisotropic, so ``D`` is never rotated into the plane. Predictions are mapped
back and averaged in probability space; a flows network's flow vectors are turned back too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class Symmetry:
    """``rot90`` by ``turns`` in the last two axes after an optional flip of the last axis
    (and, in 3D, of the depth axis)."""

    turns: int
    flip: bool
    flip_depth: bool = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a batch ``(N, C, *S)``."""
        if self.flip_depth:
            x = x.flip(-3)
        if self.flip:
            x = x.flip(-1)
        return torch.rot90(x, self.turns, dims=(-2, -1)) if self.turns else x

    def invert(self, y: torch.Tensor, vectors: Optional[int] = None) -> torch.Tensor:
        """Map an output batch ``(N, K, *S)`` of the transformed input back. ``vectors``: the first of
        ``D`` channels holding a vector field (components along the spatial axes in order, as a flows
        network's), whose components are turned back as well as moved."""
        if self.turns:
            y = torch.rot90(y, -self.turns, dims=(-2, -1))
        if self.flip:
            y = y.flip(-1)
        y = y.flip(-3) if self.flip_depth else y
        if vectors is None:
            return y
        dims = y.dim() - 2
        field = torch.einsum("ca,na...->nc...", self.linear_part(dims).to(y), y[:, vectors:vectors + dims])
        return torch.cat([y[:, :vectors], field, y[:, vectors + dims:]], dim=1)

    def linear_part(self, dims: int) -> torch.Tensor:
        """``(D, D)`` signed permutation ``A``: a pixel one step along axis ``a`` of the transformed
        image is one step along ``A[:, a]`` in the original; vectors found in the transformed image
        are ``A @ v`` in the original."""
        grid = torch.stack(torch.meshgrid(*[torch.arange(3.0)] * dims, indexing="ij"))
        moved = self.apply(grid[None])[0]
        centre = (slice(None),) + (1,) * dims
        steps = [moved[(slice(None),) + tuple(2 if i == a else 1 for i in range(dims))] for a in range(dims)]
        return torch.stack([step - moved[centre] for step in steps], dim=1)


def symmetries(dims: int) -> list[Symmetry]:
    """All TTA transforms for ``dims`` spatial axes (the identity first)."""
    plane = [Symmetry(turns, flip) for flip in (False, True) for turns in range(4)]
    if dims == 2:
        return plane
    return plane + [Symmetry(s.turns, s.flip, True) for s in plane]
