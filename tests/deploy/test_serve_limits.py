"""The server's limits against hostile clients: polyglot files, rescaled images, slow and bursting
clients, foreign Host headers, internal errors, and models that fail to load."""

from __future__ import annotations

import io
import json
import socket
import struct
import time
import warnings

import httpx
import numpy as np
import pytest
from deploy_helpers import cells_png, client_for, local_client, make_run, post, threshold_model
from PIL import Image

from unetkit.cli import main
from unetkit.export import predictor_for
from unetkit.serve import BackgroundServer, Limits, ServeOptions, create_app


def tiff_im_polyglot(im_width: int, im_height: int, im_pixels: bool) -> bytes:
    """Bytes that Pillow reads as an 8x8 grey TIFF when told the format, and as an IM image of
    ``im_width x im_height`` when it tries every format (IM's text header hides in the TIFF's
    unused bytes; ``im_pixels``: with the IM image's pixels, else the header alone)."""
    im_header = b"x: y\nImage type: L\nImage size (x*y): %d*%d\n\x1a" % (im_width, im_height)
    im_body = bytes(im_width * im_height) if im_pixels else b""
    strip_at = 8 + len(im_header) + len(im_body)
    pixels = bytes(range(64))
    ifd_at = strip_at + len(pixels)
    tags = [(256, 8), (257, 8), (258, 8), (259, 1), (262, 1), (273, strip_at), (277, 1), (278, 8), (279, 64)]
    entries = b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in tags)  # LONG values
    ifd = struct.pack("<H", len(tags)) + entries
    return b"II*\x00" + struct.pack("<I", ifd_at) + im_header + im_body + pixels + ifd + bytes(4)


@pytest.mark.parametrize("im_pixels", [True, False], ids=["im-over-the-limits", "im-decompression-bomb"])
def test_an_upload_is_decoded_as_the_format_that_was_checked(served_run, im_pixels):
    size = (100, 100) if im_pixels else (20_000, 20_000)  # 10,000 px; 400 M px: Pillow's bomb error
    data = tiff_im_polyglot(*size, im_pixels)
    with Image.open(io.BytesIO(data), formats=["TIFF"]) as as_tiff:
        assert as_tiff.size == (8, 8)
    if im_pixels:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Pillow deprecates IM
            with Image.open(io.BytesIO(data)) as as_anything:
                assert (as_anything.format, as_anything.size) == ("IM", size)
    response = post(client_for(served_run, limits=Limits(max_pixels=1000, max_side=50)), data, name="a.tif")
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (8, 8)


@pytest.mark.parametrize("decoded", ["over the limit", "bomb error"])
def test_the_decoded_picture_is_held_to_the_limits(served_run, monkeypatch, decoded):
    """What the decoder gives is checked again (413), and Pillow's bomb error there is a 413 too."""
    def decode(_) -> np.ndarray:
        if decoded == "bomb error":
            raise Image.DecompressionBombError("Image size (400000000 pixels) exceeds limit")
        return np.zeros((60, 60), np.uint8)

    monkeypatch.setattr("unetkit.serve.uploads.decode_picture", decode)
    client = client_for(served_run, limits=Limits(max_pixels=1000, max_side=50))
    response = post(client, cells_png(shape=(20, 20))[0])
    assert response.status_code == 413
    words = "decompression bomb" if decoded == "bomb error" else "60 x 60 pixels"
    assert words in response.json()["detail"]


def test_the_object_scale_pass_is_held_to_the_pixel_limit(tmp_path):
    """A model with ``data.object_diameter`` enlarges an image of small objects up to 4x per side."""
    run = make_run(tmp_path / "run", threshold_model())
    config = json.loads((run / "config.json").read_text())
    config["data"]["object_diameter"] = 100.0
    (run / "config.json").write_text(json.dumps(config))
    image = np.zeros((40, 40), np.uint8)
    for y in range(4, 40, 10):
        for x in range(4, 40, 10):
            image[y:y + 5, x:x + 5] = 255  # 16 objects 5 px wide: the second pass is at x4
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    response = post(client_for(run, limits=Limits(max_pixels=2000)), buffer.getvalue())
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "resized x4.00 to shape (160, 160) (25,600 pixels), over the limit of 2,000" in detail
    assert post(client_for(run, limits=Limits(max_pixels=160 * 160)), buffer.getvalue()).status_code == 200


class SlowUpload:
    """A raw HTTP client: the headers of a ``POST /predict`` of ``size`` body bytes, then the body
    only as :meth:`send` is called (a slow or stalled client)."""

    def __init__(self, url: str, size: int = 1_000_000) -> None:
        host, port = url.rsplit("/", 1)[-1].split(":")
        self.socket = socket.create_connection((host, int(port)), timeout=10)
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        self.socket.sendall(
            b"POST /predict HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(part) + size, part)
        )

    def send(self, size: int) -> None:
        self.socket.sendall(b"x" * size)

    def status(self, timeout: float) -> int | None:
        """The status of the answer received within ``timeout`` s, else ``None``."""
        self.socket.settimeout(timeout)
        try:
            line = self.socket.recv(4096).split(b"\r\n")[0]
        except TimeoutError:
            return None
        return int(line.split()[1])

    def close(self) -> None:
        self.socket.close()


def wait_for_pending(url: str, pending: int) -> None:
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/health").json()["queue"]["pending"] != pending:
        assert time.monotonic() < deadline, f"the queue never held {pending} requests"
        time.sleep(0.05)


def test_a_burst_of_slow_clients_is_refused_before_its_bodies_are_read(served_run):
    app = create_app(predictor_for(served_run, "torch", device="cpu"), ServeOptions(queue_size=2))
    with BackgroundServer(app) as url:
        holders = [SlowUpload(url) for _ in range(2)]
        for holder in holders:
            holder.send(1000)
        wait_for_pending(url, 2)  # the two uploads hold the queue while they arrive
        burst = [SlowUpload(url) for _ in range(4)]
        start = time.monotonic()
        assert [client.status(timeout=5) for client in burst] == [503] * 4  # not one body byte sent
        assert time.monotonic() - start < 5
        assert [holder.status(timeout=0.2) for holder in holders] == [None, None]
        for client in holders + burst:
            client.close()
        wait_for_pending(url, 0)  # clients that leave mid-upload free their slots
        assert httpx.post(f"{url}/predict", files={"file": ("a.png", cells_png()[0])}).status_code == 200


def test_a_stalled_upload_times_out_and_frees_its_slot(served_run):
    options = ServeOptions(queue_size=1, read_timeout=0.5)
    app = create_app(predictor_for(served_run, "torch", device="cpu"), options)
    with BackgroundServer(app) as url:
        stalled = SlowUpload(url)
        stalled.send(100)
        assert stalled.status(timeout=10) == 408
        stalled.close()
        wait_for_pending(url, 0)
        assert httpx.post(f"{url}/predict", files={"file": ("a.png", cells_png()[0])}).status_code == 200


def test_uvicorn_takes_at_most_max_connections(served_run):
    app = create_app(predictor_for(served_run, "torch", device="cpu"), ServeOptions(max_connections=3))
    with BackgroundServer(app) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]  # no request: slowloris
        time.sleep(0.2)
        assert httpx.get(f"{url}/health").status_code == 503  # the third connection
        for connection in idle:
            connection.close()
        time.sleep(0.2)
        assert httpx.get(f"{url}/health").status_code == 200


def test_only_requests_naming_this_server_are_answered(served_run):
    client = client_for(served_run)
    for host in ("localhost", "127.0.0.1:8000", "[::1]:8000"):
        assert client.get("/health", headers={"host": host}).status_code == 200
    for host in ("evil.example", "evil.example:8000", "localhost.evil.example", ""):
        response = client.get("/health", headers={"host": host})
        assert response.status_code == 400, host
        assert post(client, cells_png()[0], headers={"host": host}).status_code == 400
    lab = client_for(served_run, allowed_hosts=("cells.lab", "*.cells.lab"))
    expected = {"cells.lab": 200, "gpu1.cells.lab": 200, "localhost": 400, "evil.example": 400}
    assert {host: lab.get("/health", headers={"host": host}).status_code for host in expected} == expected
    anyone = client_for(served_run, allowed_hosts=("*",))
    assert anyone.get("/health", headers={"host": "evil.example"}).status_code == 200


def test_internal_errors_say_nothing_of_the_server(served_run):
    app = create_app(predictor_for(served_run, "torch", device="cpu"))

    def broken(_):
        raise RuntimeError("failed in /srv/secret/unetkit/inference/predictor.py line 12")

    app.state.segmenter.predictor.predict_proba = broken
    response = post(local_client(app, raise_server_exceptions=False), cells_png()[0])
    assert response.status_code == 500
    assert "/srv" not in response.text and "RuntimeError" not in response.text
    assert "the details are in its log" in response.json()["detail"]
    with pytest.raises(RuntimeError, match="/srv/secret"):  # on to the server, which logs it
        post(local_client(app), cells_png()[0])


def test_serve_command_sets_hosts_connections_and_timeout(served_run, monkeypatch, capsys):
    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: started.update(app=app, **kwargs))
    flags = ["--host", "10.1.2.3", "--allow-host", "cells.lab", "--max-connections", "5"]
    flags += ["--read-timeout", "9"]
    assert main(["serve", str(served_run), *flags]) == 0
    assert "--allow-host" in capsys.readouterr().err
    assert started["limit_concurrency"] == 5 and started["host"] == "10.1.2.3"
    options = started["app"].state.options
    assert options.read_timeout == 9 and options.max_connections == 5
    client = local_client(started["app"])
    expected = {"10.1.2.3:8000": 200, "cells.lab": 200, "localhost": 200, "evil.example": 400}
    assert {host: client.get("/health", headers={"host": host}).status_code for host in expected} == expected
    assert main(["serve", str(served_run), "--host", "::1"]) == 0
    assert "[::1]" in started["app"].state.options.allowed_hosts
    assert main(["serve", str(served_run), "--allow-host", "cells*"]) == 2
    assert "allowed host 'cells*'" in capsys.readouterr().err


def test_any_error_loading_the_model_is_a_clear_message(served_run, monkeypatch, capsys):
    def failing(*_, **__):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr("unetkit.export.predictor_for", failing)
    assert main(["serve", str(served_run)]) == 2
    message = f"error: cannot load the model from {served_run}: CUDA error: out of memory"
    assert message in capsys.readouterr().err
