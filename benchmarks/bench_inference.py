"""Inference benchmarks: tiled throughput next to MONAI, and peak memory of a huge image.

``throughput``: a 2048x2048 image through a same-padding net (the tutorial net, Gaussian
blending) and the paper net (overlap-tile), with unetkit's :class:`Predictor` and with MONAI's
``sliding_window_inference`` on the same network, tile size and overlap, in the same process;
prints Mpx/s, the ratio and the max abs difference of the probabilities.

``bigfile``: a 20000x20000 uint8 tiled TIFF streamed to a tiled TIFF mask in a child process;
prints its peak RSS (``ru_maxrss``) and wall time.

    python benchmarks/bench_inference.py throughput --models tutorial paper
    python benchmarks/bench_inference.py bigfile --size 20000
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from unetkit.activation import logits_to_probabilities
from unetkit.inference import Predictor
from unetkit.models import UNet


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def monai_same(model, image: torch.Tensor, tile: int, overlap: float, batch: int, device,
               blend: str, channels_last: bool = False, autocast: bool = False) -> np.ndarray:
    """MONAI sliding window, ``blend`` weights (Gaussian: sigma_scale 0.125), probabilities ``(K', H, W)``.

    ``channels_last``: the predictor hands MONAI's tiles to the network channels-last, as unetkit does.
    ``autocast``: the network runs under bfloat16 autocast (the probabilities in float32).
    """
    from monai.inferers import sliding_window_inference

    def predictor(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        return logits_to_probabilities(logits.float())

    with torch.inference_mode():
        out = sliding_window_inference(
            image.to(device), roi_size=(tile, tile), sw_batch_size=batch,
            predictor=predictor, overlap=overlap,
            mode=blend, sigma_scale=0.125, device=device,
        )
    return out[0].cpu().numpy()


def monai_valid(model, image: torch.Tensor, tile: int, batch: int, device,
                autocast: bool = False) -> np.ndarray:
    """MONAI's sliding window as the tile loop of the paper's overlap-tile strategy.

    The windows are the output tiles (roi = the output stride, no overlap, constant blending);
    with ``with_coord=True`` the predictor cuts each window's input tile, with its context,
    from the image mirror-padded once.
    """
    from monai.inferers import sliding_window_inference

    context = model.context()
    out_tile = model.output_size(tile)
    stride = out_tile - out_tile % 2**model.depth
    after = tile - stride - context  # the last window starts at size - stride (MONAI clips it)
    padded = F.pad(image, (context, after, context, after), mode="reflect").to(device)

    def predictor(window: torch.Tensor, coords) -> torch.Tensor:
        tiles = [padded[:, :, c[2].start:c[2].start + tile, c[3].start:c[3].start + tile] for c in coords]
        with torch.autocast(padded.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(torch.cat(tiles))
        probs = logits_to_probabilities(logits.float())
        return probs[:, :, :stride, :stride]

    with torch.inference_mode():
        out = sliding_window_inference(
            image.to(device), roi_size=(stride, stride), sw_batch_size=batch, predictor=predictor,
            overlap=0.0, mode="constant", with_coord=True, device=device,
        )
    return out[0].cpu().numpy()


def measure(name: str, blend: str, args: argparse.Namespace, device: torch.device) -> tuple:
    """One table row: unetkit and MONAI on the same network, image, tiles; interleaved runs."""
    torch.manual_seed(0)
    model = (UNet.tutorial() if name == "tutorial" else UNet.paper()).eval().to(device)
    image = np.random.default_rng(0).random((model.in_channels, args.size, args.size), dtype=np.float32)
    batch_t = torch.from_numpy(image)[None]
    if name == "tutorial":
        tile, overlap, batch = args.tile_same, args.overlap, args.batch_same
        channels_last = blend.endswith("+cl")
        blend = blend.removesuffix("+cl")
        predictor = Predictor(model, tile_size=tile, overlap=overlap, batch_size=batch, device=device,
                              blend=blend)
        run_monai = partial(monai_same, model, batch_t, tile, overlap, batch, device, blend, channels_last)
        setting = f"tile {tile}, overlap {overlap}, {blend}, batch {batch}"
        if channels_last:
            setting += "; MONAI's predictor made channels-last too"
    else:
        tile, batch = args.tile_valid, args.batch_valid
        run_monai = partial(monai_valid, model, batch_t, tile, batch, device)
        setting = f"tile {tile} -> {model.output_size(tile)}, overlap-tile, batch {batch}"
        if blend == "auto":  # unetkit picks its own tile and batch from the memory; MONAI as above
            predictor = Predictor(model, device=device)
            plan, auto_batch = predictor.plan(image.shape[1:])
            setting = (f"unetkit: automatic tile {plan.tile_in[0]} -> {plan.tile_out[0]}, batch "
                       f"{auto_batch}; MONAI: {setting}")
        else:
            predictor = Predictor(model, tile_size=tile, batch_size=batch, device=device)
    run_ours = partial(predictor.predict_proba, image)
    ours_s = monai_s = math.inf
    for _ in range(args.repeats if name == "tutorial" else args.repeats_paper):
        # interleaved, so both see the same load on a shared machine
        t, ours = best_time(run_ours, 1)
        ours_s = min(ours_s, t)
        t, theirs = best_time(run_monai, 1)
        monai_s = min(monai_s, t)
    ours = ours[-theirs.shape[0]:]  # the foreground channel only, for a one-channel head
    diff = np.abs(ours - theirs)
    mpx = args.size**2 / 1e6
    print(f"{name} {blend}: unetkit {ours_s:.1f} s, MONAI {monai_s:.1f} s, max diff {diff.max():.2e}",
          file=sys.stderr)
    tiles = len(predictor.plan(image.shape[1:])[0])
    return name, setting, tiles, mpx / ours_s, mpx / monai_s, monai_s / ours_s, diff.max(), diff.mean()


def throughput(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    rows = [measure(name, blend, args, device) for name in args.models
            for blend in (args.blends if name == "tutorial" else args.paper_tiles)]
    print(f"\n{args.size}x{args.size} image, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, best of the runs\n")
    print("| model | setting | tiles | unetkit Mpx/s | MONAI Mpx/s | speed-up | max abs diff "
          "| mean abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name, setting, tiles, ours, theirs, ratio, diff, mean in rows:
        print(f"| {name} | {setting} | {tiles} | {ours:.3f} | {theirs:.3f} | {ratio:.2f}x | {diff:.1e} "
              f"| {mean:.1e} |")


def matmul_peak_gflops(dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048, 4096),
                       repeats: int = 5) -> float:
    """This CPU's practical peak for ``dtype``: the best GFLOP/s of n x n matrix products in PyTorch
    (oneDNN / MKL), over a few sizes, best of ``repeats`` after a warm-up."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        seconds, _ = best_time(partial(torch.matmul, a, b), repeats + 1)
        best = max(best, 2 * n**3 / seconds / 1e9)
    return best


def network_gflop(model, tile: int) -> float:
    """Multiply-adds x 2 of one forward pass on one ``tile`` x ``tile`` input (convolutions only)."""
    total = 0.0

    def count(module, inputs, output):
        nonlocal total
        kernel = math.prod(module.kernel_size)
        if isinstance(module, torch.nn.ConvTranspose2d):  # every input pixel meets every kernel tap once
            total += 2.0 * inputs[0].numel() * kernel * module.out_channels / module.groups
        else:
            total += 2.0 * output.numel() * kernel * module.in_channels / module.groups

    convs = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, convs)]
    with torch.inference_mode():
        model(torch.zeros(1, model.in_channels, tile, tile))
    for handle in handles:
        handle.remove()
    return total / 1e9


def mosaic(folder: Path, size: int, channels: int) -> np.ndarray:
    """A ``size`` x ``size`` picture made of the (percentile-normalised) images of ``folder``, flipped in
    turn so that the joins are mirror seams: ``(channels, size, size)`` float32."""
    from unetkit.data.io import list_images, read_image
    from unetkit.data.normalize import NormalizeConfig, normalize_image

    images = [normalize_image(read_image(p), NormalizeConfig("percentile")) for p in list_images(folder)]
    edge = min(min(i.shape[1:]) for i in images)
    out = np.empty((channels, size, size), np.float32)
    k = 0
    for y in range(0, size, edge):
        for x in range(0, size, edge):
            piece = images[k % len(images)][:1, :edge, :edge]
            piece = piece[:, ::-1] if (y // edge) % 2 else piece
            piece = piece[:, :, ::-1] if (x // edge) % 2 else piece
            out[:, y:y + edge, x:x + edge] = piece[:, : size - y, : size - x]
            k += 1
    return out


def speed_model(name: str, weights: str | None):
    """The tutorial-sized or the paper network: random (seeded) weights, or those of a RUN folder."""
    if weights:
        from unetkit.checkpoint import load_model

        return load_model(weights).eval(), f"{name} (trained: {weights})"
    torch.manual_seed(0)
    return (UNet.tutorial() if name == "tutorial" else UNet.paper()).eval(), f"{name} (random weights)"


def speed(args: argparse.Namespace) -> None:
    """unetkit float32 and auto against MONAI float32 and MONAI under bfloat16 autocast: same image,
    same tiles, batch 1, runs interleaved, best of ``--repeats``; labels against unetkit float32."""
    device = torch.device("cpu")
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    rows = []
    for name in args.models:
        model, label = speed_model(name, getattr(args, f"{name}_weights"))
        channels = model.config.in_channels
        image = (mosaic(Path(args.image_folder), args.size, channels) if args.image_folder else
                 np.random.default_rng(0).random((channels, args.size, args.size), dtype=np.float32))
        batch_t = torch.from_numpy(image)[None]
        if model.context() > 0:
            tile = args.tile_valid
            monai = {"MONAI fp32": partial(monai_valid, model, batch_t, tile, 1, device),
                     "MONAI bf16 autocast": partial(monai_valid, model, batch_t, tile, 1, device, True)}
            setting = f"tile {tile} -> {model.output_size(tile)}, overlap-tile"
        else:
            tile = args.tile_same
            monai = {"MONAI fp32": partial(monai_same, model, batch_t, tile, 0.25, 1, device, "gaussian"),
                     "MONAI bf16 autocast": partial(monai_same, model, batch_t, tile, 0.25, 1, device,
                                                    "gaussian", False, True)}
            setting = f"tile {tile}, overlap 0.25, gaussian"
        ours = {
            "unetkit fp32": Predictor(model, tile_size=tile, batch_size=1, precision="fp32"),
            "unetkit auto": Predictor(model, tile_size=tile, batch_size=1),
            "unetkit auto, automatic tile": Predictor(model),
        }
        runs = {**{k: partial(p.predict_proba, image) for k, p in ours.items()}, **monai}
        best = {k: math.inf for k in runs}
        outputs = {}
        for _ in range(args.repeats):
            for key, fn in runs.items():
                t, outputs[key] = best_time(fn, 1)
                best[key] = min(best[key], t)
                print(f"{name} {key}: {t:.1f} s", file=sys.stderr, flush=True)
        reference = ours["unetkit fp32"].labels(outputs["unetkit fp32"])
        classes = ours["unetkit fp32"].num_classes
        for key, seconds in best.items():
            probs = outputs[key]
            if probs.shape[0] < classes:  # MONAI's one-channel sigmoid output: the foreground
                probs = np.concatenate([1 - probs, probs])
            labels = probs[:classes].argmax(0)
            precision = ours[key].precision if key in ours else ("bf16" if "bf16" in key else "fp32")
            plan = (ours[key] if key in ours else ours["unetkit fp32"]).plan(image.shape[1:])[0]
            gflop = network_gflop(model, plan.tile_in[0]) * len(plan)
            rows.append((label, setting if key != "unetkit auto, automatic tile" else
                         f"automatic: tile {plan.tile_in[0]} -> {plan.tile_out[0]}", key, precision,
                         len(plan),
                         args.size**2 / 1e6 / seconds, best["MONAI fp32"] / seconds,
                         best["MONAI bf16 autocast"] / seconds, gflop / seconds / peaks[precision],
                         float(np.mean(labels == reference))))
    print(f"\n{args.size}x{args.size} image, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          "batch 1, "
          f"best of {args.repeats}; peak (best n x n matmul, n = 1024-4096): "
          f"fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s\n")
    print("| network | tiles | runner | precision | tiles | Mpx/s | x MONAI fp32 | x MONAI bf16 autocast "
          "| share of peak | labels as unetkit fp32 |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for label, setting, key, precision, n, mpx, r32, r16, share, same in rows:
        print(f"| {label} | {setting} | {key} | {precision} | {n} | {mpx:.3f} | {r32:.2f}x | {r16:.2f}x "
              f"| {share:.0%} | {same:.4%} |")


def write_big_tiff(path: Path, size: int, tile: int = 512) -> None:
    """A ``size`` x ``size`` uint8 tiled TIFF of smooth blobs plus noise, written tile by tile."""
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:tile, 0:tile].astype(np.float32)

    def tiles():
        for y in range(0, size, tile):
            for x in range(0, size, tile):
                blob = 100 + 80 * np.sin((yy + y) / 37.0) * np.cos((xx + x) / 53.0)
                yield (blob + rng.normal(0, 10, blob.shape)).clip(0, 255).astype(np.uint8)

    tifffile.imwrite(path, data=tiles(), shape=(size, size), dtype=np.uint8, tile=(tile, tile),
                     compression="zlib", bigtiff=True)


def bigfile_child(src: str, dst: str, tile: int, batch: int, overlap: float, depth: int, base: int,
                  mode: str) -> None:
    """Predict ``src`` into ``dst`` in this (child) process and print a JSON report with the peak RSS.

    ``mode`` ``"default"``: the network is saved as a RUN folder and predicted as ``unetkit predict`` does,
    with no setting given (backend, precision, tile and batch chosen by unetkit); ``"fixed"``: a
    float32 PyTorch Predictor with ``tile``, ``batch`` and ``overlap`` as given (the issue-5 setting).
    """
    from unetkit.checkpoint import save_model
    from unetkit.data.classes import ClassInfo
    from unetkit.data.normalize import NormalizeConfig
    from unetkit.export import predictor_for
    from unetkit.utils.atomic import atomic_write_json

    torch.manual_seed(0)
    model = UNet(1, 1, depth=depth, base_channels=base, padding="same")
    if mode == "default":
        run = Path(dst).parent / "run"
        save_model(model, run)
        atomic_write_json(run / "classes.json", ClassInfo.binary().to_dict())
        normalize = NormalizeConfig("percentile").to_dict()
        atomic_write_json(run / "config.json", {"data": {"normalize": normalize}})
        predictor = predictor_for(run, device="cpu")
    else:
        predictor = Predictor(model, tile_size=tile, batch_size=batch, overlap=overlap, device="cpu",
                              normalize=NormalizeConfig("percentile"), classes=ClassInfo.binary(),
                              precision="fp32")
    start = time.perf_counter()
    result = predictor.predict_file(src, dst)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    plan, plan_batch = predictor.plan((20000, 20000))
    print(json.dumps({"seconds": elapsed, "peak_rss_bytes": peak, "counts": result.class_counts.tolist(),
                      "mask": str(result.mask_path), "backend": predictor.backend,
                      "precision": predictor.precision, "tile": plan.tile_in[0], "batch": plan_batch,
                      "overlap": predictor.overlap}))


def bigfile(args: argparse.Namespace) -> None:
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="unetkit-big-"))
    folder.mkdir(parents=True, exist_ok=True)
    src, dst = folder / f"big_{args.size}.tif", folder / f"big_{args.size}_mask.tif"
    if not src.exists():
        start = time.perf_counter()
        write_big_tiff(src, args.size)
        print(f"wrote {src} ({src.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
    cmd = [sys.executable, __file__, "bigfile-child", str(src), str(dst),
           *map(str, (args.tile, args.batch, args.overlap, args.depth, args.base, args.mode))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    import tifffile

    with tifffile.TiffFile(dst) as tif:
        page = tif.pages.first
        shape, tiled = page.shape, page.is_tiled
    fg = report["counts"][1] / sum(report["counts"])
    print(f"\n{args.size}x{args.size} uint8 tiled TIFF (zlib) -> tiled TIFF mask {shape}, tiled={tiled}\n")
    print("| image | model | settings | backend, precision | tile / batch / overlap | wall time "
          "| peak RSS (child) | foreground |")
    print("|---|---|---|---|---|---|---|---|")
    model = f"UNet(1, 1, depth={args.depth}, base {args.base}, same)"
    print(f"| {args.size}x{args.size} uint8 ({args.size**2 / 1e6:.0f} Mpx) | {model} | {args.mode} | "
          f"{report['backend']}, {report['precision']} | {report['tile']} / {report['batch']} / "
          f"{report['overlap']:g} | {report['seconds']:.0f} s | "
          f"{max(report['peak_rss_bytes'], children) / 2**30:.2f} GiB | {fg:.1%} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "bigfile-child":
        tile, batch, overlap, depth, base, mode = sys.argv[4:10]
        bigfile_child(sys.argv[2], sys.argv[3], int(tile), int(batch), float(overlap), int(depth), int(base),
                      mode)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--models", nargs="+", default=["tutorial", "paper"], choices=["tutorial", "paper"])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tile-same", type=int, default=512)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--blends", nargs="+", default=["constant", "gaussian", "gaussian+cl"],
                   choices=["constant", "gaussian", "constant+cl", "gaussian+cl"],
                   help="same-padding net: blend modes; +cl: MONAI's predictor feeds the net channels-last")
    p.add_argument("--batch-same", type=int, default=4)
    p.add_argument("--tile-valid", type=int, default=572)
    p.add_argument("--batch-valid", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--repeats-paper", type=int, default=1)
    p.add_argument("--paper-tiles", nargs="+", default=["fixed"], choices=["fixed", "auto"],
                   help="paper net: unetkit with the same tile as MONAI (fixed) and/or its automatic tile")
    p.set_defaults(func=throughput)
    sp = sub.add_parser("speed", help="unetkit fp32 / auto against MONAI fp32 / bf16 autocast (issue 16)")
    sp.add_argument("--models", nargs="+", default=["tutorial", "paper"], choices=["tutorial", "paper"])
    sp.add_argument("--size", type=int, default=2048)
    sp.add_argument("--tile-same", type=int, default=512)
    sp.add_argument("--tile-valid", type=int, default=572)
    sp.add_argument("--repeats", type=int, default=2)
    sp.add_argument("--tutorial-weights",
                    help="RUN folder whose same-padding network replaces the tutorial net")
    sp.add_argument("--paper-weights", help="RUN folder whose valid-padding network replaces the paper net")
    sp.add_argument("--image-folder", help="images tiled into the test picture (default: random pixels)")
    sp.set_defaults(func=speed)
    b = sub.add_parser("bigfile")
    b.add_argument("--size", type=int, default=20000)
    b.add_argument("--tile", type=int, default=512)
    b.add_argument("--batch", type=int, default=4)
    b.add_argument("--overlap", type=float, default=32, help="pixels (>= 1) or a fraction of the tile")
    b.add_argument("--depth", type=int, default=2)
    b.add_argument("--base", type=int, default=4)
    b.add_argument("--workdir", help="folder for the big input and output (default: a new temp folder)")
    b.add_argument("--mode", choices=["default", "fixed"], default="default",
                   help="default: a RUN folder predicted with no setting given; fixed: --tile/--batch/"
                        "--overlap, PyTorch float32 (the issue-5 setting)")
    b.set_defaults(func=bigfile)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
