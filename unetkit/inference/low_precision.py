"""A network prepared to predict in bfloat16 or float16: a copy with its weights in that type.

Autocast casts the float32 weights of every convolution on every call and moves activations between
types around the operations it keeps in float32; for prediction it is faster to cast once. The copy
folds each batch norm into the convolution before it (eval statistics, computed in float32 before the
cast), runs the body in the reduced type and keeps the 1x1 head in float32, so the logits (and a
residual network's skip from the input) are float32. The caller's model is not touched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """In place, for a module in eval mode: every convolution followed directly by a batch norm in an
    ``nn.Sequential`` becomes one convolution with the norm's scale and shift, the norm an identity."""
    for sequence in module.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        for i in range(len(sequence) - 1):
            conv, norm = sequence[i], sequence[i + 1]
            if isinstance(conv, CONVS) and isinstance(norm, BATCH_NORMS) and norm.track_running_stats:
                sequence[i] = fuse_conv_bn_eval(conv, norm)
                sequence[i + 1] = nn.Identity()
    return module


class Float32Head(nn.Module):
    """The network's last layer, run in float32 on the reduced-precision features."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.float())


class CastInput(nn.Module):
    """A layer that first casts its input to ``dtype``."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.layer = layer
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(self.dtype))


class LowPrecisionNetwork(nn.Module):
    """``model`` with its weights in ``dtype`` (see the module): ``(N, C, *S)`` float32 in, float32 out.

    A residual U-Net, whose output adds its input back, gets the input in float32; its first block
    casts it.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        body = fold_batch_norms(copy.deepcopy(model).eval())
        head = body.head if isinstance(getattr(body, "head", None), CONVS) else None
        body.to(dtype=dtype, memory_format=memory_format)
        self.cast_input = True
        if head is not None:
            body.head = Float32Head(head)
            if getattr(body, "residual", False):
                body.inc = CastInput(body.inc, dtype)
                self.cast_input = False
        self.body = body
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.to(self.dtype) if self.cast_input else x).float()
