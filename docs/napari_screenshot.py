"""Make ``docs/images/napari.png``: the Predict widget docked in napari after segmenting synthetic cells.

Trains a small run on synthetic cells (about a minute on two CPU cores), opens a viewer, predicts
through the widget as a user would, and grabs the window. Needs ``unetkit[napari]`` and an X display
with OpenGL; without one: ``xvfb-run -a -s "-screen 0 1400x900x24" python docs/napari_screenshot.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from unetkit.config import TrainConfig, apply_overrides
from unetkit.data.synthetic import make_synthetic_cells, write_synthetic_dataset
from unetkit.training import train


def train_run(root: Path) -> Path:
    data = write_synthetic_dataset(root / "train", 8, size=128, seed=0)
    config = apply_overrides(TrainConfig(), {
        "model.depth": 3, "model.base_channels": 8, "model.num_classes": 1, "data.patch_size": 96,
        "data.batch_size": 4, "data.patches_per_epoch": 16, "budget.epochs": 12, "optim.lr": 0.01,
        "data.train": str(data), "out": str(root / "run"),
    })
    return train(config, progress_bar=False, log=lambda _: None).path


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="unetkit-") as tmp:
        run = train_run(Path(tmp))
        cells = make_synthetic_cells((256, 256), seed=11)
        viewer = napari.Viewer(title="unetkit in napari")
        viewer.window.resize(1280, 740)
        viewer.add_image((np.clip(cells.image[0], 0, 1) * 255).astype(np.uint8), name="cells")
        _, widget = viewer.window.add_plugin_dock_widget("unetkit", "Predict")
        widget.set_run(run)
        widget.objects_check.setChecked(True)
        widget.predict_button.click()
        while not (widget.worker is not None and widget.predict_button.isEnabled()):
            QApplication.processEvents()
            time.sleep(0.05)
        viewer.layers["cells classes"].visible = False
        viewer.layers.selection.active = viewer.layers["cells objects"]
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.05)
        viewer.reset_view()
        QApplication.processEvents()
        shot = viewer.screenshot(canvas_only=False, flash=False)
        viewer.close()
    # a palette PNG: the screenshot is flat UI colours, a grey image and a few label colours
    Image.fromarray(shot[..., :3]).quantize(colors=128).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images" / "napari.png")
