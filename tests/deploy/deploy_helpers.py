"""Helpers for the deploy tests: RUN folders as `unetkit train` writes them, known models, images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

from unetkit.checkpoint import save_model
from unetkit.config import RestorationConfig, TrainConfig
from unetkit.data.classes import ClassInfo
from unetkit.data.normalize import NormalizeConfig
from unetkit.data.synthetic import make_synthetic_cells
from unetkit.export import predictor_for
from unetkit.losses import LossConfig
from unetkit.models import PlainFCN, UNet
from unetkit.serve import ServeOptions, create_app
from unetkit.utils.atomic import atomic_write_json


def make_run(root: Path, model: torch.nn.Module, classes: ClassInfo | None = None) -> Path:
    """Write ``model`` with ``classes.json`` and ``config.json`` (percentile normalisation) into ``root``.

    The run says it was trained in float32, so it predicts in float32 as its exports do: the tests that
    use it compare backends number for number."""
    torch.manual_seed(0)
    save_model(model, root)
    classes = classes or ClassInfo.binary()
    atomic_write_json(root / "classes.json", classes.to_dict())
    config = {"precision": "fp32", "data": {"normalize": NormalizeConfig().to_dict()}}
    atomic_write_json(root / "config.json", config)
    return root


def make_restoration_run(root: Path, scale: int = 1, channels: int = 1) -> Path:
    """A restoration RUN folder (no ``classes.json``): a tiny residual U-Net, ``channels`` in and out,
    ``config.json`` of a ``denoise`` run (``scale`` 1) or a ``super_resolve`` run at ``scale``."""
    torch.manual_seed(0)
    model = UNet(channels, channels, depth=2, base_channels=4, padding="same", residual=True).eval()
    with torch.no_grad():  # a residual head starts at zero (the identity): give it a correction to make
        model.head.weight.normal_(0.0, 0.2)
    save_model(model, root)
    mode = "super_resolve" if scale > 1 else "denoise"
    config = TrainConfig(
        task="restoration", restoration=RestorationConfig(mode=mode, scale=scale), loss=LossConfig(name="l1")
    )
    atomic_write_json(root / "config.json", config.validate().to_dict())
    return root


def tiny_unet(**kwargs) -> UNet:
    """A small U-Net whose untrained weights still give a non-trivial mask (bias on the head)."""
    torch.manual_seed(0)
    options = dict(depth=2, base_channels=4, padding="same")
    options.update(kwargs)
    return UNet(options.pop("in_channels", 1), options.pop("num_classes", 1), **options).eval()


def threshold_model() -> PlainFCN:
    """A network with known behaviour: a 3x3 mean filter, then logit = 20 * (mean - 0.5).

    On a percentile-normalised image it marks the bright objects, so object counts mean something.
    """
    model = PlainFCN(1, 1, base_channels=1, num_layers=1, padding="same").eval()
    conv, head = model.body[0], model.body[-1]
    with torch.no_grad():
        conv.weight.fill_(1.0 / 9.0)
        conv.bias.zero_()
        head.weight.fill_(20.0)
        head.bias.fill_(-10.0)
    return model


def cells_png(shape=(96, 128), seed: int = 0, mode: str = "L") -> tuple[bytes, np.ndarray]:
    """A synthetic cells image as PNG bytes, and the pixels as decoded ``(C, H, W)`` uint8."""
    cells = make_synthetic_cells(shape, seed=seed)
    grey = (np.clip(cells.image[0], 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(grey).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    array = np.asarray(image)
    return buffer.getvalue(), (array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0))


def local_client(app, **kwargs) -> TestClient:
    """A test client of ``app`` that calls the server by a name it answers to (``localhost``)."""
    return TestClient(app, base_url="http://localhost", **kwargs)


def client_for(run: Path, **options) -> TestClient:
    """A test client of the server of ``run`` (torch, CPU) with these :class:`ServeOptions`."""
    return local_client(create_app(predictor_for(run, "torch", device="cpu"), ServeOptions(**options)))


def post(client: TestClient, data: bytes, name: str = "cells.png", query: str = "", **kwargs):
    """``POST /predict`` with ``data`` as the multipart field ``file``."""
    return client.post(f"/predict{query}", files={"file": (name, data, "image/png")}, **kwargs)
