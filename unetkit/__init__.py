"""unetkit: train, evaluate and run U-Nets on your own images."""

from __future__ import annotations

__version__ = "0.1.0"

from .activation import logits_to_labels, logits_to_probabilities  # noqa: E402
from .models import EncoderDecoder, ModelConfig, PlainFCN, UNet, build_model  # noqa: E402

__all__ = [
    "EncoderDecoder", "ModelConfig", "PlainFCN", "UNet", "__version__", "build_model",
    "logits_to_labels", "logits_to_probabilities",
]
