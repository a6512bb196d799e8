"""unetkit: train, evaluate and run U-Nets on your own images."""

from __future__ import annotations

__version__ = "0.1.0"

import os  # noqa: E402

# Idle OpenMP threads sleep instead of spinning: on a busy or shared CPU the spinning threads of
# several processes starve each other (training steps measured 2.5x slower on 2 shared cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .activation import logits_to_labels, logits_to_probabilities  # noqa: E402
from .models import EncoderDecoder, ModelConfig, PlainFCN, UNet, build_model  # noqa: E402

__all__ = [
    "EncoderDecoder", "ModelConfig", "PlainFCN", "Run", "UNet", "__version__", "build_model",
    "logits_to_labels", "logits_to_probabilities", "train",
]


def __getattr__(name: str):
    """``unetkit.train`` and ``unetkit.Run`` load the training stack on first use only."""
    if name in ("train", "Run"):
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module 'unetkit' has no attribute {name!r}")
