"""The *Predict* dock widget: a RUN folder (or an exported model) applied to an image layer.

The prediction runs in a worker thread (:func:`napari.qt.threading.create_worker`) so the viewer stays
responsive; the progress bar follows the network's tiles and *Cancel* stops before the next tile.
The results become layers named after the image (``"<image> classes"``, ``"<image> objects"``,
``"<image> restored"``), replaced in place when they are already there (predict again after training).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .prediction import (
    LayerPrediction,
    PredictionCancelled,
    describe,
    instance_method,
    load_predictor,
    predict_layer,
)

if TYPE_CHECKING:
    import napari


class _ProgressSignal(QObject):
    """Carries ``(done, total)`` from the worker thread to the widget (a queued connection)."""

    changed = Signal(int, int)


class PredictWidget(QWidget):
    """Pick a RUN folder (or a ``.onnx`` / ``.torchscript.pt`` of ``unetkit export``) and an image layer;
    *Predict* adds a Labels layer of class ids ``(*L, *S)`` (and one of objects when asked) for a
    segmentation run, an Image layer ``(*L, *S * scale)`` for a restoration run."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Optional[Any] = None
        self._cancel = threading.Event()
        self._progress = _ProgressSignal()
        self._progress.changed.connect(self._on_progress)

        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("RUN folder of `unetkit train`, or an exported .onnx / .pt")
        self.run_edit.editingFinished.connect(self._on_run_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_edit)
        run_row.addWidget(browse)
        self.run_info = QLabel("no run chosen")
        self.run_info.setWordWrap(True)
        self.image_combo = QComboBox()
        self.objects_check = QCheckBox("separate objects (instances)")
        self.objects_check.setEnabled(False)
        self.tta_check = QCheckBox("test-time augmentation (8x slower in 2D, 16x in 3D)")
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setToolTip("input tile edge in pixels; auto: as large as the memory allows")
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("run", run_row)
        form.addRow("", self.run_info)
        form.addRow("image", self.image_combo)
        form.addRow("tile size", self.tile_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.objects_check)
        layout.addWidget(self.tta_check)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch()

        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed,
                      self.viewer.layers.events.moved):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ inputs
    def set_run(self, path: str | Path) -> None:
        """Choose the RUN folder or exported file; reads it to say what it does."""
        self.run_edit.setText(str(path))
        self._on_run_changed()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "RUN folder of `unetkit train`")
        if folder:
            self.set_run(folder)

    def _on_run_changed(self) -> None:
        path = self.run_edit.text().strip()
        if not path:
            return
        try:
            predictor = load_predictor(path, device="cpu")
        except (OSError, ValueError) as exc:
            self.run_info.setText(f"cannot use this run: {exc}")
            self.objects_check.setEnabled(False)
            return
        self.run_info.setText(describe(predictor))
        has_objects = instance_method(predictor) is not None
        self.objects_check.setEnabled(has_objects)
        if not has_objects:
            self.objects_check.setChecked(False)

    def _refresh_layers(self, _event: object = None) -> None:
        current = self.image_combo.currentText()
        self.image_combo.clear()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    def image_layer(self) -> Optional[Image]:
        """The image layer chosen (``None`` when there is none)."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # -------------------------------------------------------------- prediction
    def start(self) -> None:
        """Predict the chosen layer in a worker thread (:attr:`worker`; its ``finished`` signal fires
        after the result layers are added)."""
        layer = self.image_layer()
        source = self.run_edit.text().strip()
        if layer is None or not source:
            self.status.setText("choose a run and an image layer first")
            return
        data = layer.data[0] if layer.multiscale else layer.data
        options = {
            "tile_size": self.tile_spin.value() or None,
            "tta": self.tta_check.isChecked(),
        }
        objects = self.objects_check.isEnabled() and self.objects_check.isChecked()
        self._cancel.clear()
        # the widget reports a failure itself (status line and a napari notification)
        self.worker = create_worker(self._predict, source, data, layer.rgb, objects, options,
                                    _ignore_errors=True)
        self.worker.returned.connect(lambda result: self._add_layers(layer, result))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.predict_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)  # busy until the first tile count arrives
        self.status.setText(f"predicting {layer.name}…")
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running prediction before its next tile; no layer is added."""
        self._cancel.set()
        self.status.setText("cancelling…")

    def _predict(self, source: str, data: Any, rgb: bool, objects: bool,
                 options: dict[str, Any]) -> Optional[LayerPrediction]:
        """The worker's job: load the run, predict; ``None`` when cancelled."""
        predictor = load_predictor(source, **options)
        try:
            return predict_layer(predictor, data, rgb=rgb, instances=objects,
                                 progress=self._progress.changed.emit, cancel=self._cancel)
        except PredictionCancelled:
            return None

    def _on_progress(self, done: int, total: int) -> None:
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(min(done, total))

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"failed: {exc}")
        show_error(f"unetkit: the prediction failed: {exc}")

    def _on_finished(self) -> None:
        self.predict_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)

    def _add_layers(self, source: Image, result: Optional[LayerPrediction]) -> None:
        if result is None:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.status.setText("cancelled")
            return
        self.progress_bar.setValue(self.progress_bar.maximum())
        added = add_result_layers(self.viewer, source, result)
        self.status.setText("added " + ", ".join(layer.name for layer in added))


def add_result_layers(viewer: napari.viewer.Viewer, source: Image, result: LayerPrediction) -> list[Layer]:
    """Add (or update) the layers of ``result`` on the geometry of the image layer ``source``."""
    keep = [axis for axis in range(source.ndim) if axis != result.layout.channel_axis]
    scale = np.asarray(source.scale)[keep]
    translate = np.asarray(source.translate)[keep]
    if result.task == "restoration":
        return [_restored_layer(viewer, source, result, scale, translate)]
    layers = [_put_layer(viewer, Labels, f"{source.name} classes", result.labels,
                         scale=scale, translate=translate)]
    if result.instances is not None:
        layers.append(_put_layer(viewer, Labels, f"{source.name} objects", result.instances,
                                 scale=scale, translate=translate))
    return layers


def _restored_layer(viewer: napari.viewer.Viewer, source: Image, result: LayerPrediction,
                    scale: np.ndarray, translate: np.ndarray) -> Layer:
    """``(*L, C, *S')`` float32 -> one Image layer: grey ``(*L, *S')``, or RGB for an RGB source."""
    from ..inference.restore import to_dtype

    lead = len(result.layout.lead)
    spatial = slice(lead, None)
    step = result.scale
    if step > 1:  # the upscaled pixels' centres, in the source's world coordinates
        scale, translate = scale.copy(), translate.copy()
        translate[spatial] += (0.5 / step - 0.5) * scale[spatial]
        scale[spatial] /= step
    restored = result.restored
    name = f"{source.name} restored"
    if source.rgb and restored.shape[lead] == 3:
        dtype = (source.data[0] if source.multiscale else source.data).dtype
        data = to_dtype(np.moveaxis(restored, lead, -1), dtype)
        return _put_layer(viewer, Image, name, data, rgb=True, scale=scale, translate=translate)
    if restored.shape[lead] == 1:
        return _put_layer(viewer, Image, name, np.take(restored, 0, axis=lead), scale=scale,
                          translate=translate, contrast_limits=source.contrast_limits)
    # several grey channels: the channel axis stays, shown as one more slider
    scale = np.insert(scale, lead, 1.0)
    translate = np.insert(translate, lead, 0.0)
    return _put_layer(viewer, Image, name, restored, scale=scale, translate=translate)


def _put_layer(viewer: napari.viewer.Viewer, kind: type, name: str, data: np.ndarray, **kwargs: Any) -> Layer:
    """The layer ``name`` of type ``kind`` with ``data``: updated in place when it exists with the same
    number of axes, else added."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        if isinstance(layer, kind) and layer.ndim == data.ndim - int(kwargs.get("rgb", False)):
            layer.data = data
            layer.scale, layer.translate = kwargs["scale"], kwargs["translate"]
            return layer
        viewer.layers.remove(layer)
    if kind is Labels:
        return viewer.add_labels(data, name=name, **kwargs)
    return viewer.add_image(data, name=name, **kwargs)
