"""The one description of a network that is saved with every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Union

ARCHITECTURES = ("unet", "encoder_decoder", "plain_fcn")


def check_fields(cls: type, data: dict[str, Any], what: str) -> None:
    """Raise ``ValueError`` naming the keys of ``data`` that are not fields of the dataclass ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} fields {unknown}; known fields: {sorted(known)}")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network with :func:`unetkit.models.build_model`.

    ``architecture`` is ``"unet"``, ``"encoder_decoder"`` (no skip connections) or
    ``"plain_fcn"`` (no pooling; ``num_layers`` convs at full resolution).
    ``dropout`` is one rate or one rate per level, top to bottom. ``residual``: the network
    outputs its input plus the head's output (image-to-image learning of the correction, as DnCNN
    and VDSR; needs as many outputs as inputs). ``space_to_depth``: run the U-Net on pixel-unshuffled
    images (2D same padding; see :class:`~unetkit.models.unet.UNet`).
    """

    architecture: str = "unet"
    in_channels: int = 1
    num_classes: int = 2
    dims: int = 2
    depth: int = 4
    base_channels: int = 64
    padding: str = "valid"
    up_mode: str = "transpose"
    norm: Optional[str] = None
    dropout: Union[float, tuple[float, ...]] = 0.0
    num_layers: int = 10
    residual: bool = False
    space_to_depth: int = 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if isinstance(self.dropout, tuple):
            data["dropout"] = list(self.dropout)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        check_fields(cls, data, "model config")
        values = dict(data)
        if isinstance(values.get("dropout"), list):
            values["dropout"] = tuple(values["dropout"])
        return cls(**values)
