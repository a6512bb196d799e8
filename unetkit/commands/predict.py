"""``unetkit predict RUN INPUT... --out DIR``: segment (or restore) image files with a trained run.

With ``--nproc N`` (or under ``torchrun``) the files are shared among the processes, each file on one
process (:func:`unetkit.training.distributed.shard_files`); rank 0 prints the summary of them all
and writes the merged ``objects_coco.json``.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np

from ..data.classes import ClassInfo
from ..data.io import (
    DataError,
    failure_message,
    is_image_path,
    is_volume_path,
    list_images,
    read_label_image,
    stem_of,
)
from ..instances import (
    INSTANCE_METHODS,
    CocoCollection,
    InstanceConfig,
    instance_config_for,
    instances_from_membranes,
    instances_from_probabilities,
    object_table,
    save_instance_labels,
    write_object_table,
)
from ..training.distributed import add_nproc_option
from ..utils.atomic import atomic_path
from .inference_options import add_inference_options

if TYPE_CHECKING:
    from ..inference import Predictor
    from ..training.distributed import Distributed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment (or restore) images with a trained run",
        description=(
            "Segment image files with the model of a RUN folder. Writes DIR/<stem>.png (TIFF for 3D, "
            "256+ classes, or big TIFFs streamed tile by tile) in the encoding of the training masks. "
            "A restoration run writes the restored image, in the input's dtype and range (--float: "
            "float32 TIFF), scale times larger for super-resolution."
        ),
    )
    parser.add_argument("run", help="RUN folder written by `unetkit train` (model.json, model.safetensors)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write float32 per-class probabilities DIR/<stem>_prob.tif")
    parser.add_argument("--overlay", action="store_true",
                        help="also write a colour overlay DIR/<stem>_overlay.png (2D; middle slice for 3D)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (default: keep them)")
    parser.add_argument("--channels", choices=("gray", "rgb"),
                        help="convert images to 1 (gray) or 3 (rgb) channels to match the model")
    parser.add_argument("--tile-size", type=int,
                        help="input tile edge in pixels (default: the fastest within --max-memory)")
    parser.add_argument("--overlap", type=float,
                        help="same-padding nets: tile overlap, a fraction (<1) or pixels (default 0.25)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: flips and 90-degree turns")
    parser.add_argument("--batch-size", type=int,
                        help="tiles per forward pass (default: 1 on the CPU, as many as fit on a GPU)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--instances", action="store_true",
                        help="also separate objects: DIR/<stem>_instances.tif, DIR/<stem>_objects.csv and "
                             "one DIR/objects_coco.json for all 2D inputs")
    parser.add_argument("--instance-method", choices=INSTANCE_METHODS,
                        help="watershed (default), components, three_class (default for a run trained "
                             "with --target three-class), flows or distance (defaults for --target flows / "
                             "distance) or membrane "
                             "(default for membrane data such as EM, see the plan)")
    parser.add_argument("--min-size", type=int, default=InstanceConfig.min_size,
                        help="drop objects smaller than this many pixels "
                             f"(default {InstanceConfig.min_size})")
    parser.add_argument("--min-distance", type=int, default=InstanceConfig.min_distance,
                        help="watershed: smallest distance between two object centres in pixels "
                             f"(default {InstanceConfig.min_distance})")
    parser.add_argument("--float", action="store_true",
                        help="restoration: write float32 TIFFs instead of the input's dtype")
    add_inference_options(parser)
    add_nproc_option(parser, "predict, the files shared among the processes,")
    parser.set_defaults(func=run)


def collect_inputs(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Files named by ``patterns`` (files, folders, globs), in order without repeats, and the problems."""
    files: list[Path] = []
    problems: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = list_images(path)
            if not found:
                problems.append(f"{path}: no image files in this folder")
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            found = [p for p in found if is_image_path(p)]
            if not found:
                problems.append(f"{pattern}: no such file, folder, or matching image")
        for f in found:
            if f.resolve() not in {g.resolve() for g in files}:
                files.append(f)
    return files, problems


def failed(failures: list[str], message: str) -> None:
    """Record one file's failure and show it now, above the progress bar."""
    from tqdm.auto import tqdm

    failures.append(message)
    tqdm.write(f"FAILED {message}", file=sys.stderr)


def each_file(
    files: list[Path], failures: list[str], verb: str, job: Optional[Distributed] = None
) -> Iterator[Path]:
    """The input files in turn, with a progress bar; a second input with the same name (same outputs)
    is a failure, not a file to do. With several processes (``job``): this process's share of the
    files; rank 0 reports the name clashes and shows the bar."""
    from tqdm.auto import tqdm

    from ..training.distributed import shard_files

    main = job is None or job.is_main
    first: dict[str, Path] = {}
    for src in files:
        first.setdefault(stem_of(src), src)
    rank, world = (job.rank, job.world_size) if job is not None else (0, 1)
    mine = {id(src) for src in shard_files(list(first.values()), rank, world)}
    for src in tqdm(files, unit="file", desc="files", disable=len(files) < 2 or not main):
        stem = stem_of(src)
        if first[stem] is not src:
            if main:
                clash = f"another input has the same name {stem!r}; {verb} it into another --out"
                failed(failures, f"{src}: {clash}")
            continue
        if id(src) in mine:
            yield src


def add_2d_objects(coco: CocoCollection, file_name: str, instances: np.ndarray) -> None:
    """Add a 2D instance image to the COCO file of the run (3D volumes have none)."""
    if instances.ndim == 2:
        coco.add(file_name, instances)


def _save_overlay(path: Path, image: np.ndarray, labels: np.ndarray, colors) -> None:
    from PIL import Image

    from ..inference.files import overlay

    if labels.ndim == 3:  # a volume: show the middle slice
        middle = labels.shape[0] // 2
        image, labels = image[:, middle], labels[middle]
    with atomic_path(path) as tmp:
        Image.fromarray(overlay(image, labels, colors)).save(tmp, format="PNG")


def write_objects(out_dir: Path, stem: str, result, config: InstanceConfig, classes: ClassInfo,
                  mask: Path, target: str) -> np.ndarray:
    """Write ``<stem>_instances.tif`` and ``<stem>_objects.csv``; return the label image.

    The membrane route also draws its watershed lines into the ``mask`` as membrane, so that the
    mask's connected cells are the closed cells of the label image."""
    if config.method == "membrane":
        labels, lines = instances_from_membranes(result.probabilities, config)
        if lines.any():
            result.labels[lines] = config.membrane_class
            classes.save_mask(mask, result.labels)
    else:
        labels = instances_from_probabilities(result.probabilities, config, target)
    save_instance_labels(out_dir / f"{stem}_instances.tif", labels)
    write_object_table(out_dir / f"{stem}_objects.csv", object_table(labels, result.image))
    return labels


def run(args: argparse.Namespace) -> int:
    import torch

    from ..training.distributed import PREDICT_TIMEOUT_S, launch, setup_distributed

    try:
        if getattr(args, "nproc", None) is not None:
            return launch(args.argv, args.nproc)
        # gloo whatever the device: only the summaries travel between the processes
        job = setup_distributed(torch.device("cpu"), timeout_s=PREDICT_TIMEOUT_S)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        code = predict_files(args, job)
        # No process tears its group down while another still talks to it (gloo aborts the process).
        job.barrier("finishing the prediction")
        return code
    finally:
        job.close()


def runtime_line(predictor: Predictor) -> str:
    """What runs the network, in which arithmetic, and how the backend was chosen."""
    line = f"network: {predictor.backend}, {predictor.precision}, {predictor.device}"
    choice = predictor.backend_choice
    if choice is not None and choice.seconds:
        line += f"; {choice.summary()}"
    return line


def process_device(args: argparse.Namespace, job: Distributed) -> Optional[str]:
    """``--device``, or with several processes on CUDA, this process's GPU (``cuda:LOCAL_RANK``)."""
    import torch

    from ..training.distributed import process_device as gpu_of_process

    wants_cuda = args.device is None or args.device.startswith("cuda")
    if not (job.enabled and wants_cuda and torch.cuda.is_available()):
        return args.device
    return str(gpu_of_process(torch.device(args.device or "cuda"), job.local_rank, job.world_size))


def predict_files(args: argparse.Namespace, job: Distributed) -> int:
    """The body of :func:`run` in one process of ``job`` (the only one without ``--nproc``)."""
    from tqdm.auto import tqdm

    from ..export import predictor_for
    from ..inference.files import default_classes, streams

    # With several processes, rank 0 measures the fastest backend first; the others read its answer.
    ordered = job.enabled and args.backend == "auto"
    if ordered and not job.is_main:
        job.barrier("rank 0 choosing the backend")
    try:
        predictor = predictor_for(
            args.run, args.backend, tile_size=args.tile_size, overlap=args.overlap, tta=args.tta,
            batch_size=args.batch_size, device=process_device(args, job), progress=job.is_main,
            precision=args.precision, max_memory=args.max_memory, compiled=args.compile,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if ordered and job.is_main:
            job.barrier("rank 0 choosing the backend")
    if job.is_main:
        print(runtime_line(predictor), file=sys.stderr)
    out_dir = Path(args.out)
    files, failures = collect_inputs(args.inputs)
    if not job.is_main:  # rank 0 reports the inputs that name no file
        failures = []
    if predictor.task == "restoration":
        return restore_files(args, predictor, files, failures, job)
    if args.float:
        print("error: --float is for restoration runs; this run segments", file=sys.stderr)
        return 2
    classes = predictor.classes or default_classes(predictor.num_classes)
    inputs = {f.resolve() for f in files}
    counts = np.zeros(predictor.num_classes, dtype=np.int64)
    done = skipped = 0
    objects_config = None
    if args.instances:
        objects_config = instance_config_for(
            predictor.target, classes.names, predictor.membrane_class, args.instance_method,
            min_size=args.min_size, min_distance=args.min_distance,
        )
    coco = CocoCollection()

    def report(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    for src in each_file(files, failures, "predict", job):
        stem = stem_of(src)
        try:
            big_3d = is_volume_path(src) or classes.num_classes > 256
            mask = out_dir / f"{stem}{'.tif' if big_3d else '.png'}"
            streamed = streams(predictor, src, mask)
            if streamed:
                mask = mask.with_suffix(".tif")
            prob = out_dir / f"{stem}_prob.tif" if args.save_probabilities else None
            # A streamed image gets no overlay and no objects (they need it whole in memory).
            over = out_dir / f"{stem}_overlay.png" if args.overlay and not streamed else None
            objects = out_dir / f"{stem}_instances.tif" if objects_config and not streamed else None
            table = out_dir / f"{stem}_objects.csv" if objects is not None else None
            outputs = [p for p in (mask, prob, over, objects, table) if p is not None]
            clash = [p for p in outputs if p.resolve() in inputs]
            if clash:
                failed(failures, f"{src}: output {clash[0]} is an input file; choose another --out")
                continue
            missing = [p for p in outputs if not p.exists()]
            if not missing and not args.overwrite:
                report(f"skipped {src}: its outputs exist (use --overwrite to replace them)")
                if objects is not None:
                    add_2d_objects(coco, src.name, read_label_image(objects))
                skipped += 1
                continue
            if len(missing) < len(outputs) and not args.overwrite:
                report(f"redoing {src}: {missing[0].name} is missing (an earlier run stopped part way)")
            if streamed and (args.overlay or objects_config):
                report(f"note: {src} is streamed (too big for memory); no overlay or objects written")
            result = predictor.predict_file(src, mask, probabilities=prob, channels=args.channels)
            if objects is not None:
                instances = write_objects(
                    out_dir, stem, result, objects_config, classes, mask, predictor.target
                )
                add_2d_objects(coco, src.name, instances)
                report(f"{src}: {int(instances.max())} objects")
            if over is not None:
                _save_overlay(over, result.image, result.labels, classes.colors)
        except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the batch
            failed(failures, failure_message(src, exc))
            continue
        done += 1
        counts += result.class_counts
        if result.class_counts[1:].sum() == 0:
            report(f"warning: {src}: every pixel predicted as {classes.names[0]!r}")
    if job.enabled:
        parts = job.gather_to_main((done, skipped, failures, counts, coco))
        if parts is None:
            return 0
        done, skipped = sum(p[0] for p in parts), sum(p[1] for p in parts)
        failures = [f for p in parts for f in p[2]]
        counts = sum(p[3] for p in parts)
        coco = merge_coco([p[4] for p in parts], [f.name for f in files])
    if coco.images:
        try:
            coco.write_merged(out_dir / "objects_coco.json")
        except (DataError, OSError) as exc:
            failed(failures, str(exc))
    print(summary(done, skipped, failures, counts, classes.names, out_dir))
    return 1 if failures or not (done or skipped) else 0


def summary(done: int, skipped: int, failures: list[str], counts: np.ndarray, names: list[str],
            out_dir: Path) -> str:
    """The end-of-run report: files done / skipped / failed and the share of pixels per class."""
    lines = [f"predicted {done} file(s) into {out_dir}, skipped {skipped} (already there), "
             f"failed {len(failures)}"]
    total = int(counts.sum())
    if total:
        lines.append("pixels per class:")
        width = max(len(n) for n in names)
        for name, count in zip(names, counts):
            lines.append(f"  {name:<{width}}  {100.0 * count / total:6.2f} %")
        if counts[1:].sum() == 0:
            lines.append(f"warning: no foreground at all: every pixel is {names[0]!r}; check the model, "
                         "the channels and the normalisation")
    for failure in failures:
        lines.append(f"failed: {failure}")
    return "\n".join(lines)


def merge_coco(parts: list[CocoCollection], names: list[str]) -> CocoCollection:
    """The processes' COCO collections as one, images in the order of the input file ``names`` and
    ids numbered as one process numbers them."""
    merged = CocoCollection(parts[0].category)
    found = {}
    for part in parts:
        for image in part.images:
            objects = [a for a in part.annotations if a["image_id"] == image["id"]]
            found[image["file_name"]] = (image, objects)
    for name in names:
        if name not in found:
            continue
        image, objects = found[name]
        image_id = len(merged.images) + 1
        merged.images.append({**image, "id": image_id})
        first = len(merged.annotations) + 1
        merged.annotations += [{**a, "id": first + i, "image_id": image_id} for i, a in enumerate(objects)]
    return merged


def restore_files(
    args: argparse.Namespace, predictor, files: list[Path], failures: list[str], job: Distributed
) -> int:
    """The restoration branch of :func:`run`: one restored image per input, each file on its own."""
    from tqdm.auto import tqdm

    from ..inference.restore import restore_file

    misplaced = [flag for flag, given in (
        ("--instances", args.instances), ("--save-probabilities", args.save_probabilities),
        ("--overlay", args.overlay),
    ) if given]
    if misplaced:
        print(f"error: {', '.join(misplaced)} do(es) not apply to a restoration run", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    inputs = {f.resolve() for f in files}
    done = skipped = 0
    for src in each_file(files, failures, "restore", job):
        stem = stem_of(src)
        try:
            # The output is <stem>.png or <stem>.tif depending on the image read; either one counts.
            existing = [p for p in (out_dir / f"{stem}.png", out_dir / f"{stem}.tif") if p.exists()]
            if any(p.resolve() in inputs for p in existing):
                failed(failures, f"{src}: output {existing[0]} is an input file; choose another --out")
                continue
            if existing and not args.overwrite:
                tqdm.write(f"skipped {src}: {existing[0]} exists (--overwrite replaces it)", file=sys.stderr)
                skipped += 1
                continue
            path, note = restore_file(
                predictor, src, out_dir, float_output=args.float, channels=args.channels
            )
        except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the batch
            failed(failures, failure_message(src, exc))
            continue
        if note:
            tqdm.write(f"note: {src}: {note}", file=sys.stderr)
        done += 1
    if job.enabled:
        parts = job.gather_to_main((done, skipped, failures))
        if parts is None:
            return 0
        done, skipped = sum(p[0] for p in parts), sum(p[1] for p in parts)
        failures = [f for p in parts for f in p[2]]
    print(f"restored {done} file(s) into {out_dir}, skipped {skipped} (already there), "
          f"failed {len(failures)}")
    for failure in failures:
        print(f"failed: {failure}")
    return 1 if failures or not (done or skipped) else 0
