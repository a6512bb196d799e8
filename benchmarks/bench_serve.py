"""Bounded load test of ``unetkit serve``: 200 requests at concurrency 8 on loopback, per backend,
then bursts and slow clients.

Run by hand (needs the ``deploy`` extra), one heavy job at a time:

    flock /tmp/unetkit-heavy.lock .venv/bin/python benchmarks/bench_serve.py [--requests 200]

The server runs in this process on 127.0.0.1 (a free port) with the tutorial U-Net (random
weights, 3 channels in, one sigmoid output), queue capacity 16 and one prediction worker. Every
response must be 200 and decode to exactly the mask the library computes for the same image
with the same backend. Then a burst beyond the queue's capacity shows the 503 + Retry-After
answers and that the server stays healthy. Then slow clients (torch backend), on raw sockets:
uploads that trickle in, uploads that stall (408 at the read timeout), a burst of slow uploads
beyond the queue (503 before any body byte is read), and idle connections up to uvicorn's limit
(503), with the growth of this process's resident memory. Everything stops by itself: a fixed
number of requests, each with a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import httpx
import numpy as np
import torch
from PIL import Image

from unetkit.checkpoint import save_model
from unetkit.data.classes import ClassInfo
from unetkit.data.normalize import NormalizeConfig
from unetkit.data.synthetic import make_synthetic_cells
from unetkit.export import predictor_for
from unetkit.inference import Predictor
from unetkit.models import UNet
from unetkit.serve import BackgroundServer, ServeOptions, create_app
from unetkit.utils.atomic import atomic_write_json

TIMEOUT_S = 120.0
BOUNDARY = b"unetkit-bench"


def make_run(folder: Path) -> Path:
    torch.manual_seed(0)
    save_model(UNet.tutorial(), folder)
    atomic_write_json(folder / "classes.json", ClassInfo.binary().to_dict())
    atomic_write_json(folder / "config.json", {"data": {"normalize": NormalizeConfig("fixed").to_dict()}})
    return folder


def test_image(size: int) -> tuple[bytes, np.ndarray]:
    cells = make_synthetic_cells(size, seed=0, channels=3)
    rgb = (np.clip(np.moveaxis(cells.image, 0, -1), 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue(), np.moveaxis(rgb, -1, 0)


async def load(
    url: str, data: bytes, requests: int, concurrency: int
) -> tuple[list[float], list[int], list[bytes]]:
    """``requests`` POSTs, at most ``concurrency`` in flight; latencies (s), statuses, bodies."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: list[int] = []
    bodies: list[bytes] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:

        async def one() -> None:
            async with gate:
                start = time.perf_counter()
                response = await client.post("/predict", files={"file": ("cells.png", data, "image/png")})
                latencies.append(time.perf_counter() - start)
                statuses.append(response.status_code)
                bodies.append(response.content if response.status_code == 200 else response.headers.get(
                    "retry-after", "").encode())

        await asyncio.gather(*(one() for _ in range(requests)))
    return latencies, statuses, bodies


def decode_mask(body: bytes) -> np.ndarray:
    """A served 0/255 mask PNG -> class ids ``(H, W)``."""
    return (np.asarray(Image.open(io.BytesIO(body))) > 0).astype(np.int64)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def multipart_body(data: bytes) -> bytes:
    """``data`` as the multipart field ``file`` (boundary :data:`BOUNDARY`)."""
    return (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="cells.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--" + BOUNDARY + b"--\r\n")


async def slow_upload(
    url: str, data: bytes, pieces: int, interval: float, stall_after: Optional[int] = None
) -> tuple[int, float, int]:
    """``POST /predict`` of ``data`` from a raw socket: the headers, then the body in ``pieces`` pieces
    ``interval`` s apart, the first one ``interval`` s after the headers (none after ``stall_after``
    pieces), until the server answers. Returns the status (0: no answer, connection lost), the seconds
    from the headers to it, and the body bytes sent before it."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = multipart_body(data)
    writer.write(b"POST /predict HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
                 b"Content-Length: %d\r\n\r\n" % (host.encode(), BOUNDARY, len(body)))
    start = time.perf_counter()
    answer = asyncio.ensure_future(reader.readline())
    step = -(-len(body) // pieces)
    sent = 0
    try:
        for i in range(pieces if stall_after is None else stall_after):
            await asyncio.wait([answer], timeout=interval)
            if answer.done():
                break
            writer.write(body[i * step:(i + 1) * step])
            await writer.drain()
            sent += len(body[i * step:(i + 1) * step])
        line = await asyncio.wait_for(answer, TIMEOUT_S)
        status = int(line.split()[1]) if line else 0
    except (ConnectionError, IndexError, ValueError):
        status = 0
    seconds = time.perf_counter() - start
    writer.close()
    return status, seconds, sent


@contextmanager
def peak_rss_growth() -> Iterator[list[float]]:
    """Sample this process's resident memory every 20 ms in the block; the list gets the peak growth
    over the start, in MB, when the block ends."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * page

    start, peak, done, result = rss(), [0], threading.Event(), []

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result.append(max(peak[0] - start, 0) / 2**20)


def slow_row(name: str, results: list[tuple[int, float, int]], extra: str = "") -> str:
    """A row of the slow-client table: counts per status, seconds to the answers, body bytes sent."""
    statuses = [r[0] for r in results]
    counts = ", ".join(f"{statuses.count(s)} x {s or 'no answer'}" for s in sorted(set(statuses)))
    seconds = [r[1] for r in results]
    return (f"| {name} | {len(results)} | {counts} | {min(seconds):.2f}-{max(seconds):.2f} "
            f"| {max(r[2] for r in results) / 1024:.0f} KB | {extra} |")


async def slow_mix(url: str, data: bytes, read_timeout: float) -> list[str]:
    """8 uploads trickling in over about 2 s, 4 stalled uploads, and 100 fast requests at concurrency
    4 beside them, all at once on a queue of 16."""
    trickling = [slow_upload(url, data, 16, 0.125) for _ in range(8)]
    stalled = [slow_upload(url, data, 16, 0.125, stall_after=1) for _ in range(4)]
    slow = asyncio.gather(*trickling, *stalled)
    with peak_rss_growth() as growth:
        latencies, statuses, _ = await load(url, data, 100, 4)
        results = await slow
    fast = f"fast: {statuses.count(200)}/100 x 200, p50 {percentile(latencies, 50) * 1000:.0f} ms, " \
        f"p95 {percentile(latencies, 95) * 1000:.0f} ms"
    return [
        slow_row("trickling in over ~2 s (beside 100 fast requests)", results[:8], fast),
        slow_row(f"stalled after 1 piece (read timeout {read_timeout:g} s)", results[8:],
                 f"peak RSS growth {growth[0]:.0f} MB (whole mix)"),
    ]


async def slow_burst(url: str, data: bytes, read_timeout: float) -> list[str]:
    """4 stalled uploads hold a queue of 4; then 48 slow uploads arrive at once."""
    holders = [asyncio.ensure_future(slow_upload(url, data, 16, 0.125, stall_after=1)) for _ in range(4)]
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while (await client.get("/health")).json()["queue"]["pending"] < 4:
            await asyncio.sleep(0.02)
    with peak_rss_growth() as growth:
        burst = await asyncio.gather(*(slow_upload(url, data, 64, 0.25) for _ in range(48)))
    held = await asyncio.gather(*holders)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
        health = (await client.get("/health")).json()
        after = await client.post("/predict", files={"file": ("cells.png", data, "image/png")})
    return [
        slow_row("burst of slow uploads while 4 stalled ones hold the queue of 4", burst,
                 f"peak RSS growth {growth[0]:.1f} MB"),
        slow_row(f"the 4 stalled holders (read timeout {read_timeout:g} s)", held,
                 f"then /health {health['status']}, {health['queue']['pending']} pending; next upload "
                 f"{after.status_code}"),
    ]


async def idle_connections(url: str, count: int) -> str:
    """``count`` connections that send nothing, then one request; then the request again once they close."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(count)]
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        during = (await client.get("/health")).status_code
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.5)
        after = (await client.get("/health")).status_code
    return f"| {count} idle connections (limit {count + 1}), then GET /health | 1 | {during} | - | - " \
        f"| after they close: {after} |"


def slow_clients(predictor: Predictor, data: bytes, read_timeout: float) -> list[str]:
    """The slow-client table's rows: :func:`slow_mix`, :func:`slow_burst`, :func:`idle_connections`."""
    mix = create_app(predictor, ServeOptions(queue_size=16, read_timeout=read_timeout))
    with BackgroundServer(mix) as url:
        rows = asyncio.run(slow_mix(url, data, read_timeout))
    small = create_app(predictor, ServeOptions(queue_size=4, read_timeout=read_timeout))
    with BackgroundServer(small) as url:
        rows += asyncio.run(slow_burst(url, data, read_timeout))
    limited = create_app(predictor, ServeOptions(max_connections=8))
    with BackgroundServer(limited) as url:
        rows.append(asyncio.run(idle_connections(url, 7)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="edge of the square RGB test image")
    parser.add_argument("--backends", default="torch,onnxruntime,torchscript",
                        help="comma-separated BACKEND[:PRECISION], e.g. torch:fp32,auto (auto: what `unetkit "
                             "serve` runs by default)")
    parser.add_argument("--load-only", action="store_true", help="skip the burst and slow-client runs")
    parser.add_argument("--read-timeout", type=float, default=5.0, help="slow-client runs: read timeout")
    args = parser.parse_args()
    data, pixels = test_image(args.size)
    print(f"# serve load test: {args.requests} requests, concurrency {args.concurrency}, "
          f"{args.size}x{args.size} RGB PNG ({len(data) / 1024:.0f} KB), tutorial U-Net, queue 16, 1 worker, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs\n")
    rows = []
    overload = []
    slow = []
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        torch_labels = predictor_for(run, "torch", device="cpu", precision="fp32").predict(pixels)
        for spec in args.backends.split(","):
            backend, _, precision = spec.partition(":")
            predictor = predictor_for(run, backend, device="cpu", precision=precision or None)
            expected = predictor.predict(pixels)
            app = create_app(predictor, ServeOptions(queue_size=16, workers=1, backend=predictor.backend))
            label = f"{spec} ({predictor.backend}, {predictor.precision})"
            with BackgroundServer(app) as url:
                asyncio.run(load(url, data, 3, 1))  # warm-up
                start = time.perf_counter()
                latencies, statuses, bodies = asyncio.run(load(url, data, args.requests, args.concurrency))
                wall = time.perf_counter() - start
                same = sum(
                    status == 200 and np.array_equal(decode_mask(body), expected)
                    for status, body in zip(statuses, bodies)
                )
                agree = float((expected == torch_labels).mean())
                rows.append(
                    f"| {label} | {len(statuses)} | {statuses.count(200)} | {same} | {agree * 100:.3f} % "
                    f"| {len(statuses) / wall:.1f} | {percentile(latencies, 50) * 1000:.0f} "
                    f"| {percentile(latencies, 95) * 1000:.0f} | {max(latencies) * 1000:.0f} |"
                )
                print(rows[-1], file=sys.stderr, flush=True)
            if backend == "torch" and not args.load_only:
                small = create_app(predictor, ServeOptions(queue_size=4, workers=1, backend=backend))
                with BackgroundServer(small) as url:
                    _, statuses, bodies = asyncio.run(load(url, data, 48, 24))
                    retry = [int(b) for s, b in zip(statuses, bodies) if s == 503]
                    health = httpx.get(f"{url}/health", timeout=10).json()
                    overload.append(
                        f"| 48 at concurrency 24, queue 4 | {statuses.count(200)} "
                        f"| {statuses.count(503)} "
                        f"| {min(retry, default=0)}-{max(retry, default=0)} "
                        f"| {sorted(set(statuses))} "
                        f"| {health['status']}, {health['queue']['pending']} pending |"
                    )
                slow = slow_clients(predictor, data, args.read_timeout)
                print("\n".join(slow), file=sys.stderr, flush=True)
    print("\n| backend | requests | 200 OK | same mask as library | labels = torch fp32 | requests/s "
          "| p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if overload:
        print("\nBurst beyond the queue (torch backend):\n")
        print("| burst | 200 OK | 503 | Retry-After (s) | statuses | /health after |")
        print("|---|---:|---:|---|---|---|")
        print("\n".join(overload))
    if slow:
        print("\nSlow clients (torch backend; raw sockets, the PNG above as the upload):\n")
        print("| clients | count | answers | seconds to the answer | most body sent before it | notes |")
        print("|---|---:|---|---|---:|---|")
        print("\n".join(slow))
    failed = any(row.split("|")[2].strip() != row.split("|")[4].strip() for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
