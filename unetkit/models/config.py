"""The one description of a network that is saved with every checkpoint.

A config read from a file is bounded field by field (:meth:`ModelConfig.check`): a crafted
``model.json`` cannot ask for a network of absurd size before the weights file is even opened.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Union

ARCHITECTURES = ("unet", "encoder_decoder", "plain_fcn")


def check_fields(cls: type, data: dict[str, Any], what: str) -> None:
    """Raise ``ValueError`` naming the keys of ``data`` that are not fields of the dataclass ``cls``
    (or saying that ``data`` is no mapping at all)."""
    if not isinstance(data, dict):
        raise ValueError(f"a {what} is a mapping of fields, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} fields {unknown}; known fields: {sorted(known)}")


def check_int(what: str, name: str, value: Any, low: int, high: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an ``int`` (not a bool) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} field {name} must be an integer from {low} to {high}, got {value!r}")


def check_ints(what: str, config: Any, bounds: dict[str, tuple[int, int]]) -> None:
    """:func:`check_int` for each field of ``config`` named in ``bounds`` (name -> (low, high))."""
    for name, (low, high) in bounds.items():
        check_int(what, name, getattr(config, name), low, high)


def check_rate(what: str, name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in ``[0, 1)`` (a dropout rate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{what} field {name} must be a number in [0, 1), got {value!r}")


def check_flag(what: str, name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{what} field {name} must be true or false, got {value!r}")


MODEL_BOUNDS = {
    "in_channels": (1, 1024), "num_classes": (1, 65536), "dims": (2, 3), "depth": (0, 8),
    "base_channels": (1, 1024), "num_layers": (0, 256), "space_to_depth": (1, 16),
}
"""The range of each integer field of a :class:`ModelConfig` read from a file."""


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

    def check(self) -> ModelConfig:
        """Raise ``ValueError`` naming the first field of the wrong type or out of its bounds
        (:data:`MODEL_BOUNDS`, dropout rates in ``[0, 1)``); returns ``self``. The option strings
        (padding, up_mode, norm) are checked when the network is built."""
        what = "model config"
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"{what} field architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        check_ints(what, self, MODEL_BOUNDS)
        rates = self.dropout if isinstance(self.dropout, tuple) else (self.dropout,)
        if len(rates) > MODEL_BOUNDS["depth"][1] + 1:
            raise ValueError(f"{what} field dropout holds {len(rates)} rates: one per level at most")
        for rate in rates:
            check_rate(what, "dropout", rate)
        check_flag(what, "residual", self.residual)
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """The inverse of :meth:`to_dict`, checked (:meth:`check`); unknown keys raise ``ValueError``."""
        check_fields(cls, data, "model config")
        values = dict(data)
        if isinstance(values.get("dropout"), list):
            values["dropout"] = tuple(values["dropout"])
        return cls(**values).check()
