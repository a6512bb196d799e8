"""Fixtures for the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import binary_masks, make_dataset


@pytest.fixture
def binary_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", binary_masks())
