"""The server's API with FastAPI's test client: every endpoint, and every kind of bad input."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
import zlib

import numpy as np
import pytest
import tifffile
import torch
from deploy_helpers import (
    cells_png,
    client_for,
    local_client,
    make_restoration_run,
    make_run,
    post,
    threshold_model,
)
from fastapi.testclient import TestClient
from PIL import Image

from unetkit.cli import main
from unetkit.data.classes import ClassInfo
from unetkit.export import export_run, predictor_for
from unetkit.inference import Predictor
from unetkit.inference.restore import LUMINANCE_NOTE, to_dtype
from unetkit.instances import instances_from_foreground
from unetkit.models import PlainFCN
from unetkit.serve import BoundedQueue, Limits, QueueFull, ServeOptions, create_app


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with one tiny compressed row: a bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b""
    )


def encode(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, **({"format": "PNG"} | save))
    return buffer.getvalue()


@pytest.fixture
def client(served_run) -> TestClient:
    return client_for(served_run)


def test_health_and_model(client, served_run):
    assert client.get("/health").json() == {"status": "ok", "queue": {"pending": 0, "capacity": 16}}
    info = client.get("/model").json()
    assert info["in_channels"] == 1 and info["num_classes"] == 2
    assert info["model"]["architecture"] == "plain_fcn"
    assert info["classes"]["names"] == ["background", "foreground"]
    assert info["valid_sizes"]["first"] == 1 and info["valid_sizes"]["context"] == 0
    assert info["normalize"]["mode"] == "percentile"
    assert info["limits"]["max_bytes"] == 50 * 2**20


def test_predict_returns_the_library_mask(client, served_run):
    data, pixels = cells_png()
    response = post(client, data)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    expected = Predictor.from_run(served_run, device="cpu").predict(pixels)
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(mask, expected.astype(np.uint8) * 255)


def test_instances_json_counts_and_boxes_objects(client, served_run):
    data, pixels = cells_png(seed=3)
    result = post(client, data, query="?instances=true").json()
    predictor = Predictor.from_run(served_run, device="cpu")
    probs = predictor.predict_proba(pixels)
    labels = predictor.labels_from_blocks(probs)
    instances = instances_from_foreground(probs[1])  # the library's watershed route, default settings
    assert result["count"] == instances.max() == len(result["objects"]) > 3
    assert (result["width"], result["height"]) == (128, 96)
    assert sum(o["area"] for o in result["objects"]) == int((instances > 0).sum())
    for obj in result["objects"]:
        x0, y0, x1, y1 = obj["box"]
        assert obj["class"] == "foreground"
        assert (instances[y0:y1, x0:x1] > 0).sum() >= obj["area"]
        assert x0 <= obj["centroid"][0] < x1 and y0 <= obj["centroid"][1] < y1
    assert "mask" not in result
    with_masks = post(client, data, query="?instances=true&include_masks=true").json()
    assert with_masks["count"] == result["count"]
    overlay = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(with_masks["overlay_png"]))))
    assert overlay.shape == (96, 128, 4)
    np.testing.assert_array_equal(overlay[..., 3] > 0, labels == 1)


def test_threshold_and_tta_parameters(client, served_run):
    data, pixels = cells_png(seed=1)
    low = np.asarray(Image.open(io.BytesIO(post(client, data, query="?threshold=0.05").content))) > 0
    high = np.asarray(Image.open(io.BytesIO(post(client, data, query="?threshold=0.95").content))) > 0
    assert high.sum() < low.sum() and not (high & ~low).any()
    tta = np.asarray(Image.open(io.BytesIO(post(client, data, query="?tta=true").content)))
    expected = Predictor.from_run(served_run, device="cpu", tta=True).predict(pixels)
    np.testing.assert_array_equal(tta, expected.astype(np.uint8) * 255)
    assert post(client, data, query="?threshold=1.5").status_code == 422


def test_multiclass_mask_uses_the_training_encoding(tmp_path):
    run = make_run(tmp_path / "run", threshold_model(), ClassInfo(["bg", "cell"], encoding="palette"))
    data, _ = cells_png()
    mask = Image.open(io.BytesIO(post(client_for(run), data).content))
    assert mask.mode == "P" and set(np.unique(np.asarray(mask))) <= {0, 1}


def test_grey_saved_as_rgb_and_16_bit_images_are_accepted(client):
    rgb, _ = cells_png(mode="RGB")
    assert post(client, rgb).status_code == 200
    deep = (np.random.default_rng(0).random((40, 50)) * 60000).astype(np.uint16)
    assert post(client, encode(deep)).status_code == 200


BAD_INPUTS = {
    "not an image": (b"%PDF-1.4 definitely not pixels", 415, "not an image"),
    "empty": (b"", 400, "empty"),
    # Pillow would hand EPS to Ghostscript: not a format the server opens.
    "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", 415, "not an image"),
    "bomb": (png_header_only(9000, 9000), 413, "81,000,000 pixels"),
    "huge side": (png_header_only(25_000, 2), 413, "longest side"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_image_bytes_get_a_4xx_json_error(client, name):
    data, status, words = BAD_INPUTS[name]
    response = post(client, data)
    assert response.status_code == status
    assert words in response.json()["detail"]
    assert client.get("/health").json()["queue"]["pending"] == 0


def test_truncated_image(client):
    data, _ = cells_png()
    response = post(client, data[: len(data) // 2])
    assert response.status_code == 400 and "truncated" in response.json()["detail"]


def test_pixel_limit_is_configurable(served_run):
    data, _ = cells_png()
    response = post(client_for(served_run, limits=Limits(max_pixels=5000)), data)
    assert response.status_code == 413 and "12,288 pixels" in response.json()["detail"]


def test_files_over_the_byte_limit(served_run):
    client = client_for(served_run, limits=Limits(max_bytes=4000))
    data = encode((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    assert 4000 < len(data) < 8000
    response = post(client, data)  # the file is over the limit, the request is within its slack
    assert response.status_code == 413 and "over the server's limit of 0.0 MB" in response.json()["detail"]
    response = post(client, data * 30)  # refused by its Content-Length before it is read
    assert response.status_code == 413 and "request body is over" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b"x" * 4096

    multipart = {"content-type": "multipart/form-data; boundary=b"}
    response = client.post("/predict", content=chunks(), headers=multipart)
    assert response.status_code == 413
    small = encode(np.full((8, 8), 7, np.uint8))
    assert post(client, small).status_code == 200


@pytest.mark.parametrize(
    "image, words",
    [
        (np.stack([np.full((20, 20), v, np.uint8) for v in (0, 9, 1)], -1),
         "3 channel(s) (RGB) but the model expects 1"),
        (np.dstack([np.full((20, 20, 3), 5, np.uint8), np.full((20, 20), 128, np.uint8)]), "4 channel(s)"),
    ],
    ids=["rgb", "rgba"],
)
def test_wrong_channel_count(client, image, words):
    response = post(client, encode(image))
    assert response.status_code == 422 and words in response.json()["detail"]


def test_multi_page_tiff_is_refused(client):
    buffer = io.BytesIO()
    pages = [Image.fromarray(np.full((16, 16), v, np.uint8)) for v in (1, 2)]
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    response = post(client, buffer.getvalue(), name="stack.tif")
    assert response.status_code == 422 and "2 frames" in response.json()["detail"]


def test_malformed_requests(client):
    cases = [
        client.post("/predict", content=b"--b\r\ngarbage", headers={"content-type": "multipart/form-data"}),
        client.post(
            "/predict", content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n',
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),
        client.post("/predict", files={"image": ("a.png", cells_png()[0], "image/png")}),
        client.post("/predict", json={"file": "aGVsbG8="}),
        client.post("/predict", data={"file": "not a file"}),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, response.text
        assert isinstance(response.json()["detail"], (str, list))
    assert client.get("/health").json()["status"] == "ok"


def test_upload_names_are_never_used_as_paths(client, tmp_path):
    data, _ = cells_png()
    target = tmp_path / "written_by_the_server.png"
    for name in (str(target), "../../../../tmp/unetkit-evil.png", "..\\..\\evil.png"):
        assert post(client, data, name=name).status_code == 200
    assert not target.exists()
    response = post(client, data)
    assert response.headers["content-disposition"] == 'attachment; filename="mask.png"'


def test_full_queue_answers_503_with_retry_after(served_run):
    app = create_app(predictor_for(served_run, "torch", device="cpu"), ServeOptions(queue_size=1))
    release = threading.Event()
    with local_client(app) as client:
        # Hold the only slot with a job that waits, as a long prediction would.
        held = client.portal.start_task_soon(app.state.queue.run, release.wait, 10)
        response = post(client, cells_png()[0])
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert "busy" in response.json()["detail"]
        release.set()
        held.result(timeout=10)
        assert post(client, cells_png()[0]).status_code == 200


def test_bounded_queue_counts_jobs_until_they_finish():
    async def scenario() -> None:
        queue = BoundedQueue(capacity=2, workers=1)
        gate = threading.Event()
        first = asyncio.ensure_future(queue.run(gate.wait, 5))
        second = asyncio.ensure_future(queue.run(lambda: 42))
        await asyncio.sleep(0.05)
        assert queue.pending == 2
        with pytest.raises(QueueFull):
            await queue.run(lambda: 0)
        second.cancel()  # cancelled while waiting: its slot is freed when the executor drops it
        gate.set()
        assert await first is True
        await asyncio.sleep(0.05)
        assert queue.pending == 0
        assert await queue.run(lambda: 7) == 7
        queue.shutdown()

    asyncio.run(scenario())


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="file"', 'id="overlay"', 'id="opacity"', 'id="count"', 'id="download"'):
        assert element in page.text
    assert "fetch(`/predict?" in client.get("/static/app.js").text
    assert client.get("/static/../app.py").status_code == 404


def test_serve_command_errors(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "missing is not a folder" in capsys.readouterr().err


def test_serving_an_exported_onnx_file(served_run, tmp_path):
    exported = export_run(served_run, "onnx", tmp_path / "shipped.onnx")
    client = local_client(create_app(predictor_for(exported, "onnxruntime", device="cpu"),
                                   ServeOptions(backend="onnxruntime")))
    info = client.get("/model").json()
    assert info["backend"] == "onnxruntime" and info["normalize"]["mode"] == "percentile"
    data, pixels = cells_png(seed=2)
    mask = np.asarray(Image.open(io.BytesIO(post(client, data).content)))
    expected = Predictor.from_run(served_run, device="cpu").predict(pixels)
    np.testing.assert_array_equal(mask, expected.astype(np.uint8) * 255)


def test_three_class_run_serves_dataset_masks_and_separates_touching_objects(tmp_path):
    """A `--target three-class` run: 0/255 masks (the dataset's encoding), objects by the border route."""
    model = PlainFCN(1, 3, num_layers=0).eval()  # logits from the normalised intensity x
    with torch.no_grad():
        model.body[-1].weight.copy_(torch.tensor([-40.0, 40.0, 0.0]).view(3, 1, 1, 1))
        model.body[-1].bias.copy_(torch.tensor([10.0, -30.0, 0.0]))  # 0 background, 0.5 border, 1 interior
    run = make_run(tmp_path / "run", model)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({"data": {**config["data"], "target": "three_class"}}))
    image = np.zeros((40, 60), dtype=np.uint8)
    image[8:32, 6:54] = 128  # two squares touching along x = 30, each with a border ring
    image[11:29, 9:27] = 255
    image[11:29, 33:51] = 255
    client = client_for(run)
    mask = np.asarray(Image.open(io.BytesIO(post(client, encode(image)).content)))
    assert set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 24 * 48
    result = post(client, encode(image), query="?instances=true").json()
    assert result["count"] == 2 and {o["class"] for o in result["objects"]} == {"foreground"}


# ------------------------------------------------------------------ restoration models: POST /restore
def restore_post(client: TestClient, data: bytes, name: str = "image.png", query: str = ""):
    return client.post(f"/restore{query}", files={"file": (name, data, "image/png")})


def test_restore_returns_the_library_image(tmp_path):
    run = make_restoration_run(tmp_path / "run")
    client = client_for(run)
    info = client.get("/model").json()
    assert (info["task"], info["scale"], info["route"]) == ("restoration", 1, "/restore")
    assert info["classes"] is None and info["num_classes"] is None and info["out_channels"] == 1
    data, pixels = cells_png(shape=(48, 64))
    response = restore_post(client, data)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert "x-unetkit-note" not in response.headers
    assert response.headers["content-disposition"] == 'attachment; filename="restored.png"'
    restored = Image.open(io.BytesIO(response.content))
    assert restored.mode == "L" and restored.size == (64, 48)
    expected = to_dtype(Predictor.from_run(run, device="cpu").restore(pixels), np.uint8)
    np.testing.assert_array_equal(np.asarray(restored)[None], expected)
    assert (expected != pixels).mean() > 0.1
    assert restore_post(client, data, query="?tta=true").status_code == 200


def test_restore_keeps_16_bit_and_float_uploads(tmp_path):
    run = make_restoration_run(tmp_path / "run")
    client = client_for(run)
    predictor = Predictor.from_run(run, device="cpu")
    deep = (np.random.default_rng(0).random((40, 50)) * 60000).astype(np.uint16)
    response = restore_post(client, encode(deep))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    restored = Image.open(io.BytesIO(response.content))
    assert restored.mode == "I;16" and np.asarray(restored).dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(restored), to_dtype(predictor.restore(deep), np.uint16)[0])
    floats = np.random.default_rng(1).random((24, 30)).astype(np.float32)
    response = restore_post(client, encode(floats, format="TIFF"), name="image.tif")
    assert response.status_code == 200 and response.headers["content-type"] == "image/tiff"
    restored = tifffile.imread(io.BytesIO(response.content))
    assert restored.dtype == np.float32 and restored.shape == (24, 30)
    np.testing.assert_allclose(restored, predictor.restore(floats)[0], atol=1e-6)


def test_rgb_upload_to_a_grey_model_goes_through_the_luminance(tmp_path):
    run = make_restoration_run(tmp_path / "run")
    rgb = (np.random.default_rng(3).random((40, 48, 3)) * 255).astype(np.uint8)
    response = restore_post(client_for(run), encode(rgb))
    assert response.status_code == 200 and response.headers["x-unetkit-note"] == LUMINANCE_NOTE
    restored = Image.open(io.BytesIO(response.content))
    assert restored.mode == "RGB" and restored.size == (48, 40)
    expected = to_dtype(Predictor.from_run(run, device="cpu").restore(np.moveaxis(rgb, -1, 0)), np.uint8)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(restored), -1, 0), expected)


def test_super_resolution_answers_scale_times_larger(tmp_path):
    run = make_restoration_run(tmp_path / "run", scale=2)
    client = client_for(run)
    assert client.get("/model").json()["scale"] == 2
    data, pixels = cells_png(shape=(30, 40))
    restored = Image.open(io.BytesIO(restore_post(client, data).content))
    assert restored.size == (80, 60)
    expected = to_dtype(Predictor.from_run(run, device="cpu").restore(pixels), np.uint8)
    np.testing.assert_array_equal(np.asarray(restored)[None], expected)
    exported = export_run(run, "onnx", tmp_path / "sr.onnx")  # the exported file serves the same
    onnx_client = local_client(create_app(predictor_for(exported, "onnxruntime", device="cpu"),
                                        ServeOptions(backend="onnxruntime")))
    info = onnx_client.get("/model").json()
    assert (info["task"], info["scale"], info["backend"]) == ("restoration", 2, "onnxruntime")
    from_onnx = np.asarray(Image.open(io.BytesIO(restore_post(onnx_client, data).content)))
    assert from_onnx.shape == (60, 80) and np.abs(from_onnx.astype(int) - expected[0]).max() <= 1


def test_routes_of_the_other_task_answer_400(client, tmp_path):
    data, _ = cells_png(shape=(32, 32))
    response = restore_post(client, data)  # a segmentation model
    assert response.status_code == 400 and "POST /predict" in response.json()["detail"]
    assert client.get("/model").json()["task"] == "segmentation"
    restoring = client_for(make_restoration_run(tmp_path / "run"))
    for query in ("", "?instances=true"):
        response = post(restoring, data, query=query)
        assert response.status_code == 400 and "POST /restore" in response.json()["detail"]
    assert restoring.get("/health").json()["queue"]["pending"] == 0
    assert restoring.get("/").status_code == 200
    assert "fetch(`/restore?" in restoring.get("/static/app.js").text


def test_restore_limits_apply_to_the_upload_and_the_output(tmp_path):
    run = make_restoration_run(tmp_path / "run", scale=2)
    client = client_for(run, limits=Limits(max_pixels=5000, max_side=100))
    assert restore_post(client, encode(np.full((30, 40), 9, np.uint8))).status_code == 200  # 4,800 out
    response = restore_post(client, encode(np.full((40, 50), 9, np.uint8)))  # 2,000 in, 8,000 out
    assert response.status_code == 413
    assert "x2 super-resolution would be 100 x 80 (8,000 pixels)" in response.json()["detail"]
    response = restore_post(client, encode(np.full((10, 60), 9, np.uint8)))  # 120 px wide out
    assert response.status_code == 413 and "50 per side" in response.json()["detail"]
    response = restore_post(client, png_header_only(90, 90))  # the upload itself is over the limit
    assert response.status_code == 413 and "8,100 pixels" in response.json()["detail"]
    small_files = client_for(run, limits=Limits(max_bytes=4000))
    noisy = encode((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    response = restore_post(small_files, noisy)
    assert response.status_code == 413 and "over the server's limit" in response.json()["detail"]
