"""Which arithmetic a training step runs in: float32, or bfloat16/float16 autocast where it pays."""

from __future__ import annotations

from typing import Optional

import torch


def mixed_precision_dtype(device: torch.device, precision: str) -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``) on ``device``;
    ``None``: train in float32.

    On the CPU, bfloat16 pays only with native instructions (AVX512-BF16 or AMX); elsewhere it is
    emulated and slower than float32, so ``"auto"`` keeps float32 there.
    """
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.bfloat16 if precision == "bf16" or native else None


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> torch.autocast:
    """The autocast context for :func:`mixed_precision_dtype`'s answer (disabled for ``None``)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
