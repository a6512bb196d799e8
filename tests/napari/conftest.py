"""Fixtures of the napari plugin tests: an X display for the viewer's OpenGL canvas, tiny RUN folders.

napari draws with OpenGL, which Qt's ``offscreen`` platform does not offer: without ``$DISPLAY`` the
tests start an Xvfb server (Debian package ``xvfb``; Mesa renders) for the session and use Qt's ``xcb``
platform on it. The viewers are never shown. Qt keeps its connection until the process ends, so the
server is started with ``-terminate`` (it quits when its last client leaves) rather than stopped early.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def x_display():
    """``$DISPLAY``, or an Xvfb server started for the session (skip the tests when there is none)."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("napari's canvas needs OpenGL on an X display: set DISPLAY or install Xvfb (apt: xvfb)")
    read, write = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp", "-terminate"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()  # Xvfb writes the display number once it accepts clients
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    saved = {name: os.environ.get(name) for name in ("DISPLAY", "QT_QPA_PLATFORM")}
    os.environ.update(DISPLAY=f":{number}", QT_QPA_PLATFORM="xcb")
    yield os.environ["DISPLAY"]
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    from qtpy.QtWidgets import QApplication

    if QApplication.instance() is None:  # no client ever came: nothing will make it quit by itself
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def qapp_args(pytestconfig, x_display):
    """pytest-qt's QApplication arguments, given once the X display is up: the application (made for
    the first test that needs a viewer) connects to it."""
    return [pytestconfig.getini("qt_qapp_name")]


@pytest.fixture(scope="session")
def segmentation_run(tmp_path_factory) -> Path:
    """A 2D binary U-Net (depth 2, width 4) trained for a few steps on synthetic cells by unetkit."""
    from napari_helpers import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("segmentation"))
