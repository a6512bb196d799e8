"""Fixtures of the deploy tests: RUN folders with a tiny U-Net and with a known threshold model."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_helpers import make_run, threshold_model, tiny_unet


@pytest.fixture
def binary_run(tmp_path: Path) -> Path:
    """A 1-channel-in, 1-logit (sigmoid) same-padding net, binary255 masks."""
    return make_run(tmp_path / "run", tiny_unet())


@pytest.fixture
def served_run(tmp_path: Path) -> Path:
    """A RUN folder holding :func:`threshold_model` with binary 0/255 masks."""
    return make_run(tmp_path / "served", threshold_model())
