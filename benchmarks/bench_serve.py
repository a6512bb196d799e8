"""Bounded load test of ``unetkit serve``: 200 requests at concurrency 8 on loopback, per backend.

Run by hand (needs the ``deploy`` extra), one heavy job at a time:

    flock /tmp/unetkit-heavy.lock .venv/bin/python benchmarks/bench_serve.py [--requests 200]

The server runs in this process on 127.0.0.1 (a free port) with the tutorial U-Net (random
weights, 3 channels in, one sigmoid output), queue capacity 16 and one prediction worker. Every
response must be 200 and decode to exactly the mask the library computes for the same image
with the same backend. Then a burst beyond the queue's capacity shows the 503 + Retry-After
answers and that the server stays healthy. Everything stops by itself: a fixed number of
requests, each with a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from unetkit.checkpoint import save_model
from unetkit.data.classes import ClassInfo
from unetkit.data.normalize import NormalizeConfig
from unetkit.data.synthetic import make_synthetic_cells
from unetkit.export import predictor_for
from unetkit.models import UNet
from unetkit.serve import BackgroundServer, ServeOptions, create_app
from unetkit.utils.atomic import atomic_write_json

TIMEOUT_S = 120.0


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="edge of the square RGB test image")
    parser.add_argument("--backends", default="torch,onnxruntime,torchscript")
    args = parser.parse_args()
    data, pixels = test_image(args.size)
    print(f"# serve load test: {args.requests} requests, concurrency {args.concurrency}, "
          f"{args.size}x{args.size} RGB PNG ({len(data) / 1024:.0f} KB), tutorial U-Net, queue 16, 1 worker, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs\n")
    rows = []
    overload = []
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        torch_labels = predictor_for(run, "torch", device="cpu").predict(pixels)
        for backend in args.backends.split(","):
            predictor = predictor_for(run, backend, device="cpu")
            expected = predictor.predict(pixels)
            app = create_app(predictor, ServeOptions(queue_size=16, workers=1, backend=backend))
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
                    f"| {backend} | {len(statuses)} | {statuses.count(200)} | {same} | {agree * 100:.3f} % "
                    f"| {len(statuses) / wall:.1f} | {percentile(latencies, 50) * 1000:.0f} "
                    f"| {percentile(latencies, 95) * 1000:.0f} | {max(latencies) * 1000:.0f} |"
                )
                print(rows[-1], file=sys.stderr, flush=True)
            if backend == "torch":
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
    print("\n| backend | requests | 200 OK | same mask as library | labels = torch's | requests/s | p50 ms "
          "| p95 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nBurst beyond the queue (torch backend):\n")
    print("| burst | 200 OK | 503 | Retry-After (s) | statuses | /health after |")
    print("|---|---:|---:|---|---|---|")
    print("\n".join(overload))
    failed = any(row.split("|")[2].strip() != row.split("|")[4].strip() for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
