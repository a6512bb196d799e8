"""``unetkit serve``: a FastAPI app that segments or restores uploaded images, with a web page at ``/``.

* :mod:`.app`: the endpoints (``/health``, ``/model``, ``/predict``, ``/restore``, the page);
* :mod:`.uploads`: decoding uploaded bytes with byte, pixel and side limits;
* :mod:`.jobs`: the bounded queue that runs predictions off the event loop.
"""

from .app import BackgroundServer, ServeOptions, create_app
from .jobs import BoundedQueue, QueueFull
from .uploads import Limits, UploadError, decode_upload

__all__ = [
    "BackgroundServer", "BoundedQueue", "Limits", "QueueFull", "ServeOptions", "UploadError", "create_app",
    "decode_upload",
]
