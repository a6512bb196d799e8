"""The plugin as napari finds it (npe2 manifest by entry point), and unetkit without napari loaded."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

npe2 = pytest.importorskip("npe2")


def test_the_manifest_is_found_through_the_entry_point():
    manager = npe2.PluginManager()
    manager.discover()
    manifest = manager.get_manifest("unetkit")
    assert [w.display_name for w in manifest.contributions.widgets] == ["Predict"]
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories and set(reader.filename_patterns) == {"*_prob.tif", "*_instances.tif"}
    pytest.importorskip("napari")
    for command in manifest.contributions.commands:  # every command names an importable callable
        module, _, name = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), command.python_name
    readers = {r.command for r in manager.iter_compatible_readers(["x/cell_000_prob.tif"])}
    assert "unetkit.get_reader" in readers


def test_unetkit_imports_neither_napari_nor_qt():
    code = (
        "import sys, unetkit, unetkit.napari, unetkit.napari.prediction, unetkit.napari._reader; "
        "loaded = sorted(m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6') if m in sys.modules); "
        "print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
