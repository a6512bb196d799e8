"""bioimage.io packages against unetkit on trained runs: do the Model Zoo's tools give the same labels?

Exports each RUN as a bioimage.io package (``unetkit export RUN --format bioimageio``), predicts every
image of IMAGES with ``bioimageio.core`` (the whole image at once, as the Model Zoo's Python runner
does) and with unetkit's own predictor (its default tiles and blending, or ``--tile-size``), and
prints per run the fraction of pixels whose label is the same, the worst image, and the time per
image of each::

    python benchmarks/bench_bioimageio.py /tmp/unetkit-bench/synthetic/route1 \\
        /tmp/unetkit-bench/synthetic/route2 --images /tmp/unetkit-bench/synthetic/gen_val

Runs that predict at an object scale are refused (the format cannot resize images by their objects),
so the comparison is only for runs without one. Needs the ``bioimageio`` extra.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from unetkit.bioimageio_package import export_bioimageio_run
from unetkit.data.instances import to_data_labels
from unetkit.data.io import read_image
from unetkit.data.samples import find_samples
from unetkit.inference import Predictor


def core_labels(package: Path, image: np.ndarray, predictor: Predictor) -> np.ndarray:
    """Labels ``(*S)`` from bioimageio.core's prediction of a channel-first ``image`` ``(C, *S)``; a
    valid-padding network gets the image mirror-padded by its context, as unetkit pads it."""
    import bioimageio.core

    context = predictor.model.context()
    if context:
        image = np.pad(image, [(0, 0)] + [(context, context)] * (image.ndim - 1), mode="reflect")
    sample = bioimageio.core.predict(model=str(package), inputs=image[None].astype(np.float32))
    (tensor,) = sample.members.values()
    probabilities = tensor.data.to_numpy()[0]
    if probabilities.shape[0] == 1:
        return (probabilities[0] > 0.5).astype(np.int64)
    return to_data_labels(probabilities.argmax(axis=0), predictor.target)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="RUN folders of `unetkit train`")
    parser.add_argument("--images", type=Path, required=True, help="a dataset folder (images/) to predict")
    parser.add_argument("--tile-size", type=int, help="unetkit's input tile (default: its own choice)")
    args = parser.parse_args(argv)
    images = [read_image(s.image) for s in find_samples(args.images)]
    tiles = f"{args.tile_size} px tiles" if args.tile_size else "its default tiles"
    print(f"{len(images)} images from {args.images}; unetkit predicts with {tiles}\n")
    print("| run | target | identical labels (all pixels) | worst image | bioimageio.core s/image | "
          "unetkit s/image |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            package = export_bioimageio_run(run, Path(tmp) / f"{run.name}.zip")
            predictor = Predictor.from_run(run, device="cpu", tile_size=args.tile_size)
            same, total, worst, core_s, ours_s = 0, 0, 1.0, 0.0, 0.0
            for image in images:
                start = time.perf_counter()
                theirs = core_labels(package, image, predictor)
                core_s += time.perf_counter() - start
                start = time.perf_counter()
                ours = predictor.predict(image)
                ours_s += time.perf_counter() - start
                equal = int((theirs == ours).sum())
                same, total = same + equal, total + ours.size
                worst = min(worst, equal / ours.size)
            print(f"| {run.name} | {predictor.target} | {same / total:.5%} | {worst:.4%} | "
                  f"{core_s / len(images):.2f} | {ours_s / len(images):.2f} |")


if __name__ == "__main__":
    main()
