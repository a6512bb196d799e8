"""``unetkit serve RUN``: the segmentation or restoration web service and its page (default: 127.0.0.1)."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..serve.uploads import MB, Limits
from .inference_options import add_inference_options

LOOPBACK = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a trained model over HTTP, with a web page",
        description=(
            "Serve the model of a RUN folder (or an exported .onnx / .torchscript.pt file with --backend): "
            "GET /health, GET /model, POST /predict (segmentation) or POST /restore (restoration: denoising, "
            "super-resolution), the image in the multipart field 'file', and a web page at /."
        ),
    )
    parser.add_argument("run", help="RUN folder written by `unetkit train`, or a file from `unetkit export`")
    parser.add_argument("--host", default=LOOPBACK, help="address (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME",
        help="also answer requests whose Host header is NAME (the name or address clients use; '*.domain' "
        "for its subdomains, '*' for any); repeatable. Default: only the --host address and localhost",
    )
    add_inference_options(parser, memory=False)
    parser.add_argument("--max-mb", type=float, default=50.0, help="largest upload in MB (default: 50)")
    parser.add_argument(
        "--max-pixels", type=int, default=Limits.max_pixels, help="largest width x height (default: 40M)"
    )
    parser.add_argument("--queue", type=int, default=16, help="requests queued or running (default: 16)")
    parser.add_argument("--workers", type=int, default=1, help="prediction threads (default: 1)")
    parser.add_argument(
        "--max-connections", type=int, default=64,
        help="connections taken at once; more are answered 503 (default: 64)",
    )
    parser.add_argument(
        "--read-timeout", type=float, default=60.0,
        help="seconds an upload may take to arrive, else 408 (default: 60)",
    )
    parser.add_argument("--tile-size", type=int, default=None,
                        help="tile edge (default: chosen for speed within the memory budget)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..export import predictor_for
    from ..serve import ServeOptions, create_app
    from ..serve.app import LOCAL_HOSTS

    if not _is_loopback(args.host):
        print(
            f"warning: binding {args.host} exposes the server beyond this machine; it has no authentication. "
            "Clients must reach it by a name or address given with --allow-host",
            file=sys.stderr,
        )
    try:
        predictor = predictor_for(
            args.run, args.backend, tile_size=args.tile_size, precision=args.precision, compiled=args.compile
        )
    except Exception as exc:  # noqa: BLE001 - any failure to load the model is reported, not raised
        print(f"error: cannot load the model from {args.run}: {exc}", file=sys.stderr)
        return 2
    try:
        options = ServeOptions(
            limits=Limits(max_bytes=int(args.max_mb * MB), max_pixels=args.max_pixels),
            queue_size=args.queue, workers=args.workers, backend=predictor.backend,
            read_timeout=args.read_timeout,
            allowed_hosts=(_host_header(args.host), *LOCAL_HOSTS, *args.allow_host),
            max_connections=args.max_connections,
        )
        app = create_app(predictor, options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", limit_concurrency=args.max_connections)
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _host_header(host: str) -> str:
    """How a ``Host`` header names the address ``host``: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host
