"""Which arithmetic a network runs in: float32, or bfloat16/float16 autocast where the hardware computes it.

Training and prediction share the rule (:func:`native_bfloat16`); they differ in what ``"auto"`` may
give and how it runs: a training step runs under autocast with float32 master weights (and scales
float16 losses), while a prediction runs a copy of the network with its weights in the reduced type
(:mod:`unetkit.inference.low_precision`) and turns its output back into float32 before the
activation, the blending and everything after it.
"""

from __future__ import annotations

from typing import Optional

import torch

INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Tasks whose outputs are labels: reduced precision was measured to keep >= 99.9% of them
# (BENCHMARKS.md, issue 16), so "auto" may use it. A restored image is a grey value, where
# bfloat16's 8-bit mantissa shows in the PSNR, so "auto" keeps float32 for it.
REDUCED_PRECISION_TASKS = ("segmentation",)


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (CUDA with bf16; CPUs with AVX512-BF16 or AMX).
    Elsewhere bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def hardware_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The reduced type ``device`` computes fastest: bfloat16 where :func:`native_bfloat16`, float16 on
    CUDA GPUs without bfloat16, ``None`` (float32) elsewhere."""
    if native_bfloat16(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


def mixed_precision_dtype(device: torch.device, precision: str) -> Optional[torch.dtype]:
    """The autocast dtype of a training step for ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``) on
    ``device``; ``None``: train in float32. ``"auto"``: :func:`hardware_dtype` (float16 with loss scaling
    on older GPUs)."""
    return hardware_dtype(device) if precision == "auto" else DTYPES[precision]


def inference_dtype(
    device: torch.device, precision: str, task: str = "segmentation"
) -> Optional[torch.dtype]:
    """The type a prediction computes in for ``precision`` (one of :data:`INFERENCE_PRECISIONS`) on
    ``device``; ``None``: float32.

    ``"auto"``: :func:`hardware_dtype` for a task of :data:`REDUCED_PRECISION_TASKS`, float32 for other
    tasks. ``"bf16"`` and ``"fp16"`` are what they say, even where emulated (slow, but the same numbers).
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return DTYPES[precision]
    return hardware_dtype(device) if task in REDUCED_PRECISION_TASKS else None


def prediction_precision(trained: Optional[str]) -> str:
    """The default prediction precision of a run trained with ``trained`` (its ``--precision``): a run
    trained in ``"fp32"`` or ``"bf16"`` predicts in it, one trained with ``"auto"`` with ``"auto"``."""
    return trained if trained in ("fp32", "bf16") else "auto"


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for a dtype of :data:`DTYPES` (``None``: float32)."""
    return {value: name for name, value in DTYPES.items()}[dtype]


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> torch.autocast:
    """The autocast context for a dtype of :func:`mixed_precision_dtype` (disabled for ``None``)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
