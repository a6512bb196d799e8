"""The FastAPI app: ``GET /health``, ``GET /model``, ``POST /predict``, ``POST /restore``, the page at ``/``.

``/predict`` segments (a segmentation model), ``/restore`` restores (a restoration model: denoising,
super-resolution); each answers 400 naming the other on a model of the other task. The model is
loaded once, when the app is built. Each upload takes a slot of a :class:`~.jobs.BoundedQueue`
before its body is received (503 with ``Retry-After`` when none is free), is received under a byte
limit and a time limit (408), then decoded and predicted on a worker thread, so the event loop never
blocks and a burst, slow clients included, cannot exhaust memory or disk. Only requests whose
``Host`` header names this server are answered (DNS rebinding). Every error is a 4xx/5xx JSON
``{"detail": "..."}``; a 500 says nothing of the server (the detail goes to the server's log);
nothing from a request is used as a filesystem path (the upload's file name is ignored).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from .. import __version__
from ..activation import probabilities_to_labels
from ..data.classes import ClassInfo, default_colors
from ..data.instances import MAP_TARGETS, to_data_labels
from ..data.scale import ScaleLimitError
from ..export import valid_size_rule
from ..inference.files import default_classes
from ..inference.restore import LUMINANCE_NOTE, restore_array, to_dtype, uses_luminance
from .jobs import BoundedQueue, QueueFull
from .objects import measure_objects, object_labels
from .uploads import Limits, UploadError, decode_upload, match_channels

STATIC = Path(__file__).parent / "static"
#: The Host headers a server answers by default: this machine's names for itself.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
NOTE_HEADER = "X-Unetkit-Note"
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}},
        }}},
    }
}


@dataclass
class ServeOptions:
    """Server settings: upload limits, queue capacity and worker threads, the backend's name, the
    seconds an upload may take to arrive, the ``Host`` headers answered (``"*"``: any; a name, an
    address, ``[v6 address]`` or ``*.domain``), and the connections uvicorn takes at once (more are
    answered 503 by uvicorn)."""

    limits: Limits = field(default_factory=Limits)
    queue_size: int = 16
    workers: int = 1
    backend: str = "torch"
    read_timeout: float = 60.0
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS
    max_connections: int = 64


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"the request body is over the server's limit of {limit / 2**20:.1f} MB: "
            "upload a smaller image"
        )


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` (by Content-Length, or while reading)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            error = BodyTooLarge(self.max_bytes)
            await JSONResponse({"detail": error.detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def png_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Segmenter:
    """The prediction work of one request, run on a queue worker: decode, predict, encode.

    The pixel limit holds for the image the network sees: a model with an object scale
    (``data.object_diameter``) resizes an image up to 4x per side for its second pass.
    """

    def __init__(self, predictor: Any, limits: Limits) -> None:
        self.predictor = copy.copy(predictor)
        self.predictor.max_pixels = limits.max_pixels
        self.tta_predictor = copy.copy(self.predictor)
        self.tta_predictor.tta = True
        self.limits = limits
        self.classes: ClassInfo = predictor.classes or default_classes(predictor.num_classes)
        self.binary = predictor.model.config.num_classes == 1 or predictor.target in MAP_TARGETS

    def probabilities(self, data: bytes, tta: bool) -> np.ndarray:
        """Per-class probabilities ``(K, H, W)`` for the uploaded bytes."""
        image = match_channels(decode_upload(data, self.limits), self.predictor.in_channels)
        try:
            return (self.tta_predictor if tta else self.predictor).predict_proba(image)
        except ScaleLimitError as exc:
            raise UploadError(413, f"{exc} (or use `unetkit predict`, which has no such limit)") from None

    def labels(self, probs: np.ndarray, threshold: float) -> np.ndarray:
        """Class ids ``(H, W)`` of the training data's classes; for a binary model ``threshold``
        applies to the foreground probability (a flows or distance model's maps play no part)."""
        if self.binary:
            probs = probs[1:2]
        labels = probabilities_to_labels(torch.from_numpy(probs)[None], threshold)[0].numpy()
        return to_data_labels(labels, self.predictor.target)

    def mask_png(self, labels: np.ndarray) -> tuple[bytes, str]:
        """The mask file in the training masks' encoding (``ClassInfo.save_mask``) and its media type."""
        with tempfile.TemporaryDirectory(prefix="unetkit-serve-") as folder:
            path = self.classes.save_mask(Path(folder) / "mask.png", labels)
            media = "image/png" if path.suffix == ".png" else "image/tiff"
            return path.read_bytes(), media

    def overlay_colors(self) -> np.ndarray:
        """``(K, 3)`` uint8 overlay colours: the class colours, with greys (e.g. a binary mask's
        white, invisible over bright objects) replaced by distinct hues."""
        hues = default_colors(self.classes.num_classes + 2)[2:]
        colors = [
            hues[i] if len(set(color)) == 1 else color for i, color in enumerate(self.classes.colors or [])
        ]
        return np.array(colors, dtype=np.uint8)

    def overlay_png(self, labels: np.ndarray) -> bytes:
        """RGBA PNG ``(H, W, 4)``: each class in its overlay colour, background transparent."""
        from PIL import Image

        colors = self.overlay_colors()
        rgba = np.zeros(labels.shape + (4,), dtype=np.uint8)
        known = (labels > 0) & (labels < len(colors))
        rgba[known, :3] = colors[labels[known]]
        rgba[known, 3] = 255
        buffer = io.BytesIO()
        Image.fromarray(rgba).save(buffer, format="PNG")
        return buffer.getvalue()

    def mask_response(self, data: bytes, threshold: float, tta: bool) -> tuple[bytes, str]:
        return self.mask_png(self.labels(self.probabilities(data, tta), threshold))

    def objects_response(self, data: bytes, threshold: float, tta: bool, include_masks: bool) -> dict:
        probs = self.probabilities(data, tta)
        labels = self.labels(probs, threshold)
        instances = object_labels(probs, labels, self.classes, threshold, self.predictor.target,
                                  self.predictor.membrane_class)
        objects = measure_objects(instances, labels, self.classes)
        result: dict[str, Any] = {
            "width": int(labels.shape[1]),
            "height": int(labels.shape[0]),
            "count": len(objects),
            "objects": objects,
        }
        if include_masks:
            mask, media = self.mask_png(labels)
            result["mask"] = {"media_type": media, "base64": png_base64(mask)}
            result["overlay_png"] = png_base64(self.overlay_png(labels))
        return result


def encode_restored(image: np.ndarray) -> tuple[bytes, str]:
    """A restored image ``(C, H, W)`` in the upload's dtype as file bytes and media type: PNG for 8-bit
    (1-4 channels) and 16-bit grey, TIFF (that dtype, zlib) for what PNG does not hold (float, 32-bit,
    16-bit colour)."""
    from PIL import Image

    channels = image.shape[0]
    png = (image.dtype == np.uint8 and channels <= 4) or (image.dtype == np.uint16 and channels == 1)
    buffer = io.BytesIO()
    if png:
        Image.fromarray(image[0] if channels == 1 else np.ascontiguousarray(np.moveaxis(image, 0, -1))).save(
            buffer, format="PNG"
        )
        return buffer.getvalue(), "image/png"
    import tifffile

    data = image[0] if channels == 1 else image
    tifffile.imwrite(buffer, data, metadata={"axes": "YX" if channels == 1 else "CYX"}, compression="zlib")
    return buffer.getvalue(), "image/tiff"


class Restorer:
    """The restoration work of one request, run on a queue worker: decode, restore, encode."""

    def __init__(self, predictor: Any, limits: Limits) -> None:
        self.predictor = predictor
        self.tta_predictor = copy.copy(predictor)
        self.tta_predictor.tta = True
        self.limits = limits
        self.scale: int = predictor.scale

    def restore(self, data: bytes, tta: bool) -> tuple[np.ndarray, Optional[str]]:
        """The restored upload ``(C, H * scale, W * scale)`` in the upload's dtype (rounded and clipped),
        and a note when an RGB upload went through a grey-level model's luminance route (else ``None``)."""
        image = decode_upload(data, self.limits, output_scale=self.scale)
        predictor = self.tta_predictor if tta else self.predictor
        note = None
        if uses_luminance(predictor, image):
            note = LUMINANCE_NOTE
        else:
            image = match_channels(image, predictor.in_channels)
        return to_dtype(restore_array(predictor, image), image.dtype), note

    def response(self, data: bytes, tta: bool) -> tuple[bytes, str, Optional[str]]:
        """The restored file's bytes, its media type and the note of :meth:`restore`."""
        restored, note = self.restore(data, tta)
        body, media = encode_restored(restored)
        return body, media, note


class WrongTask(HTTPException):
    """400: the other task's route (``/predict`` on a restoration model, ``/restore`` on a segmenter)."""

    def __init__(self, task: str) -> None:
        if task == "restoration":
            message = (
                "this server's model is a restoration model (it outputs images, not masks): "
                "upload the image to POST /restore"
            )
        else:
            message = (
                "this server's model is a segmentation model (it outputs masks): "
                "upload the image to POST /predict"
            )
        super().__init__(400, message)


def model_description(predictor: Any, options: ServeOptions, classes: Optional[ClassInfo]) -> dict[str, Any]:
    """What ``GET /model`` answers: task, scale, config, classes (``None`` for restoration), channels,
    valid sizes, normalisation, backend, limits."""
    model = predictor.model
    restoration = predictor.task == "restoration"
    return {
        "task": predictor.task,
        "scale": predictor.scale,
        "route": "/restore" if restoration else "/predict",
        "model": model.config.to_dict(),
        "classes": classes.to_dict() if classes is not None else None,
        "in_channels": predictor.in_channels,
        "num_classes": None if restoration else predictor.num_classes,
        "out_channels": model.config.num_classes,
        "valid_sizes": valid_size_rule(model),
        "normalize": predictor.normalize.to_dict() if predictor.normalize is not None else None,
        "backend": options.backend,
        "limits": options.limits.to_dict(),
        "queue_size": options.queue_size,
    }


def check_options(options: ServeOptions) -> None:
    """Raise ``ValueError`` saying which setting of ``options`` is impossible."""
    if options.read_timeout <= 0 or options.max_connections < 1:
        raise ValueError(
            f"read_timeout must be > 0 s and max_connections at least 1, got {options.read_timeout} "
            f"and {options.max_connections}"
        )
    for host in options.allowed_hosts:
        if "*" in host[1:] or (host.startswith("*") and host != "*" and not host.startswith("*.")):
            raise ValueError(
                f"allowed host {host!r}: give a name or address, '*.domain' for subdomains, or '*' for any"
            )


def create_app(predictor: Any, options: Optional[ServeOptions] = None) -> FastAPI:
    """The app serving ``predictor`` (a :class:`~unetkit.inference.Predictor`, model loaded already):
    a segmentation model on ``POST /predict``, a restoration model on ``POST /restore``."""
    options = options or ServeOptions()
    check_options(options)
    limits = options.limits
    task = predictor.task
    segmenter = Segmenter(predictor, limits) if task == "segmentation" else None
    restorer = Restorer(predictor, limits) if task == "restoration" else None
    queue = BoundedQueue(options.queue_size, options.workers)
    model_info = model_description(predictor, options, segmenter.classes if segmenter is not None else None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        queue.shutdown()

    app = FastAPI(
        title="unetkit", version=__version__, summary="Segment or restore uploaded images", lifespan=lifespan
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(options.allowed_hosts), www_redirect=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(
            {"detail": f"{exc}: the server is busy"}, status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(UploadError)
    async def bad_upload(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, exc: ValueError) -> JSONResponse:
        # The predictor's own checks (e.g. an image smaller than the model can tile).
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_: Request, __: ClientDisconnect) -> Response:
        # The client left while its upload was being received: nobody reads this answer.
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, __: Exception) -> JSONResponse:
        # Starlette raises the exception again once this answer is sent: the server logs it in full.
        return JSONResponse(
            {"detail": "internal error: the server failed on this request (the details are in its log)"},
            status_code=500,
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health() -> dict:
        """Liveness, and how full the prediction queue is."""
        return {"status": "ok", "queue": {"pending": queue.pending, "capacity": queue.capacity}}

    @app.get("/model")
    async def model_endpoint() -> dict:
        """Task and scale, model config, classes, input channels, valid sizes, normalisation, limits."""
        return model_info

    async def read_upload(request: Request) -> bytes:
        """The bytes of the multipart field ``file`` (at most ``limits.max_bytes + 1`` read)."""
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise UploadError(400, "no file in the request: upload the image as the multipart field 'file'")
        data = await upload.read(limits.max_bytes + 1)
        await form.close()
        return data

    async def run_upload(request: Request, work: Any, *args: Any) -> Any:
        """Take a queue slot (503 when none is free), receive the upload within
        ``options.read_timeout`` s (else 408), then ``work(data, *args)`` on a worker thread."""
        with queue.slot() as slot:
            try:
                data = await asyncio.wait_for(read_upload(request), options.read_timeout)
            except asyncio.TimeoutError:
                raise UploadError(
                    408, f"the upload did not arrive within {options.read_timeout:g} s: send it again "
                    "over a faster connection, or a smaller image"
                ) from None
            return await slot.run(work, data, *args)

    @app.post(
        "/predict",
        responses={200: {"content": {"image/png": {}, "application/json": {}}}},
        openapi_extra=UPLOAD_BODY,
    )
    async def predict(
        request: Request,
        threshold: float = Query(0.5, gt=0.0, lt=1.0, description="foreground threshold (binary models)"),
        tta: bool = Query(False, description="average over flips and 90-degree rotations"),
        instances: bool = Query(False, description="JSON with per-object measurements and boxes"),
        include_masks: bool = Query(False, description="with instances: add the mask and an overlay, base64"),
    ) -> Response:
        """Segment one image uploaded as the multipart field ``file``.

        Returns the mask PNG (same encoding as the training masks), or with ``instances=true``
        JSON ``{"count", "objects": [{"id", "class", "area", "box", "centroid"}], ...}``.
        A restoration model answers 400 (use ``/restore``).
        """
        if segmenter is None:
            raise WrongTask(task)
        if instances:
            result = await run_upload(request, segmenter.objects_response, threshold, tta, include_masks)
            return Response(json.dumps(result), media_type="application/json")
        mask, media = await run_upload(request, segmenter.mask_response, threshold, tta)
        name = "mask.png" if media == "image/png" else "mask.tif"
        disposition = f'attachment; filename="{name}"'
        return Response(mask, media_type=media, headers={"Content-Disposition": disposition})

    @app.post(
        "/restore",
        responses={200: {"content": {"image/png": {}, "image/tiff": {}}}},
        openapi_extra=UPLOAD_BODY,
    )
    async def restore(
        request: Request,
        tta: bool = Query(False, description="average over flips and 90-degree rotations"),
    ) -> Response:
        """Restore (denoise, super-resolve) one image uploaded as the multipart field ``file``.

        Returns the restored image, ``scale`` times larger per axis for a super-resolution model, in
        the upload's dtype: PNG for 8-bit and 16-bit grey uploads, TIFF otherwise (e.g. float). An
        RGB upload to a grey-level model is restored through its luminance, said in the
        ``X-Unetkit-Note`` header. A segmentation model answers 400 (use ``/predict``).
        """
        if restorer is None:
            raise WrongTask(task)
        body, media, note = await run_upload(request, restorer.response, tta)
        name = "restored.png" if media == "image/png" else "restored.tif"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if note:
            headers[NOTE_HEADER] = note
        return Response(body, media_type=media, headers=headers)

    app.state.queue = queue
    app.state.options = options
    app.state.segmenter = segmenter
    app.state.restorer = restorer
    return app


class BackgroundServer:
    """Run ``app`` under uvicorn on a loopback port in a thread (tests, benchmarks, notebooks).

    ``with BackgroundServer(app) as url: ...``; ``port=0`` picks a free port. Only loopback
    addresses are accepted here. uvicorn takes at most ``ServeOptions.max_connections`` at once.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import ipaddress

        import uvicorn

        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"BackgroundServer binds loopback addresses only, got {host!r}")
        limit = app.state.options.max_connections
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", limit_concurrency=limit)
        self.server = uvicorn.Server(config)
        self.host = host
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> str:
        self._thread = threading.Thread(target=self.server.run, name="unetkit-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start (see the log above)")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
