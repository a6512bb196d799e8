"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (small networks are slower on two busy cores), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own unetkit cache (the backend choices of ``backend="auto"``), so no test
    reads a choice another one measured, and the user's own cache is left alone."""
    monkeypatch.setenv("UNETKIT_CACHE_DIR", str(tmp_path_factory.mktemp("unetkit-cache")))
