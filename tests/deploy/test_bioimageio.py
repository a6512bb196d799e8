"""bioimage.io packages: valid for bioimageio.spec, pass bioimageio.core's model test, predict as unetkit.

Everything is local: the packages name no remote file, so bioimageio reads only the zip (no network).
"""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import bioimageio.core
import numpy as np
import pytest
import tifffile
import torch
import yaml
from bioimageio.spec import load_description
from bioimageio.spec.model.v0_5 import ModelDescr
from deploy_helpers import make_restoration_run, make_run, tiny_unet
from PIL import Image

from unetkit.bioimageio_package import (
    BioimageioExportWarning,
    Citation,
    PackageOptions,
    export_bioimageio_run,
    read_package,
)
from unetkit.checkpoint import ModelLoadError, save_model
from unetkit.cli import main
from unetkit.config import TrainConfig, save_config
from unetkit.data.classes import ClassInfo
from unetkit.data.instances import to_data_labels
from unetkit.data.normalize import NormalizeConfig, normalization_params
from unetkit.data.synthetic import make_synthetic_cells
from unetkit.export import predictor_for, valid_size_rule
from unetkit.inference import Predictor
from unetkit.models import UNet
from unetkit.models.diffusion import DiffusionUNet, DiffusionUNetConfig
from unetkit.utils.atomic import atomic_write_json

RUNS = ("binary", "isbi", "three_class", "restoration", "volume")


def set_data(run: Path, **data) -> Path:
    """Update ``config.json``'s ``data`` section of ``run``."""
    config = json.loads((run / "config.json").read_text())
    config.setdefault("data", {}).update(data)
    atomic_write_json(run / "config.json", config)
    return run


def make_runs(root: Path) -> dict[str, Path]:
    """The five kinds of run (each of the first four with another normalisation):

    - ``binary``: the demo's kind, one sigmoid logit, same padding, percentile normalisation;
    - ``isbi``: membranes (class 0) and cells, valid padding (the paper's overlap-tile), 8-bit ``fixed``;
    - ``three_class``: background / interior / border (``--target three-class``), ``zscore``;
    - ``restoration``: a residual denoising U-Net (percentile);
    - ``volume``: a 3D binary U-Net (percentile).
    """
    torch.manual_seed(0)
    isbi = UNet(1, 2, depth=2, base_channels=4, padding="valid").eval()
    runs = {
        "binary": make_run(root / "binary", tiny_unet()),
        "isbi": make_run(root / "isbi", isbi, ClassInfo.binary(names=("membrane", "cell"))),
        "three_class": make_run(root / "three_class", tiny_unet(num_classes=3)),
        "restoration": make_restoration_run(root / "restoration"),
        "volume": make_run(root / "volume", tiny_unet(dims=3)),
    }
    set_data(runs["isbi"], normalize=NormalizeConfig(mode="fixed").to_dict(), membrane_class=0)
    set_data(runs["three_class"], normalize=NormalizeConfig(mode="zscore").to_dict(), target="three_class")
    return runs


def cells(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A synthetic cells image on 0-255, float32 ``(*shape)``."""
    return (np.clip(make_synthetic_cells(shape, seed=seed).image[0], 0, 1) * 255).astype(np.float32)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, Path]]]:
    """Each run of :func:`make_runs` and its package (the test input cut from a small sample image).

    bioimageio.core runs a full garbage collection each time it unloads a model (six times per model
    test); with the test session's objects frozen out of the collector's reach that takes milliseconds
    instead of about a second each."""
    gc.freeze()
    root = tmp_path_factory.mktemp("bioimageio")
    sample = root / "sample.tif"
    tifffile.imwrite(sample, cells((72, 80), seed=1).astype(np.uint8))
    options = PackageOptions(authors=["Ada Lovelace"], cite=[Citation.parse("unetkit docs=10.5281/zenodo.1")],
                             sample=sample, tags=["cells"])
    out = {}
    for name, run in make_runs(root).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BioimageioExportWarning)
            # the volume's test input comes from a synthetic 3D cells image (no --sample, no training data)
            run_options = dataclasses.replace(options, sample=None) if name == "volume" else options
            out[name] = run, export_bioimageio_run(run, root / f"{name}.zip", run_options)
    yield out
    gc.unfreeze()


# The weight formats bioimageio.core's model test runs per package: all three for the demo's kind, one
# each for the others (every format on two packages or more; tests/deploy/test_export.py checks that the ONNX
# and TorchScript graphs equal the PyTorch network for every architecture variant).
MODEL_TESTS = {
    "binary": ["pytorch_state_dict", "torchscript", "onnx"],
    "isbi": ["torchscript"],
    "three_class": ["onnx"],
    "restoration": ["pytorch_state_dict"],
    "volume": ["onnx"],
}


@pytest.mark.parametrize("name", RUNS)
def test_package_is_valid_and_passes_the_core_model_test(packages, name):
    """Valid for bioimageio.spec; bioimageio.core reproduces the test output (computed by unetkit) and runs
    the parameterised input sizes (n = 0, 1, 2; batch 1 and 2) with the output sizes the package states."""
    descr = load_description(packages[name][1], perform_io_checks=True)
    assert isinstance(descr, ModelDescr), descr.validation_summary.format()
    assert descr.validation_summary.status == "valid-format"
    assert [d.name for d in descr.validation_summary.details if d.errors] == []
    for weight_format in MODEL_TESTS[name]:
        summary = bioimageio.core.test_model(descr, weight_format=weight_format)
        assert summary.status == "passed", summary.format()
        checks = [d.name for d in summary.details if weight_format in d.name]
        assert f"Reproduce test outputs from test inputs ({weight_format})" in checks
        assert len(checks) == 7, checks  # the test output and six parameterised inputs


def test_rdf_states_the_run(packages):
    run, package = packages["binary"]
    rdf = read_package(package)
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
    assert {"rdf.yaml", "weights.pt", "weights.torchscript.pt", "weights.onnx", "test_input.npy",
            "test_output.npy", "cover.png", "README.md"} <= names
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    assert rdf["authors"] == [{"name": "Ada Lovelace"}] and rdf["license"] == "MIT"
    assert {"text": "unetkit docs", "doi": "10.5281/zenodo.1"} in rdf["cite"]
    assert any(c.get("doi") == "10.1007/978-3-319-24574-4_28" for c in rdf["cite"])
    assert "cells" in rdf["tags"]
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert [a.get("id") for a in inp["axes"][2:]] == ["y", "x"]
    predictor = Predictor.from_run(run, device="cpu")
    rule = valid_size_rule(predictor.model)
    assert inp["axes"][2]["size"] == {"min": rule["first"], "step": rule["step"]} == {"min": 4, "step": 4}
    assert steps(inp, "preprocessing") == [{"id": "scale_range", "kwargs": {
        "axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.8, "eps": 1e-6}}]
    assert steps(out, "postprocessing") == [{"id": "sigmoid"}]
    assert out["axes"][1]["channel_names"] == ["foreground"]
    assert out["axes"][2]["size"] == {"tensor_id": "image", "axis_id": "y", "offset": 0}
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    architecture = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert architecture["import_from"] == "unetkit.bioimageio_package"
    assert architecture["kwargs"] == json.loads((run / "model.json").read_text())
    contract = rdf["config"]["unetkit"]["contract"]
    assert contract["classes"] == json.loads((run / "classes.json").read_text())
    assert contract["normalize"]["mode"] == "percentile"
    with zipfile.ZipFile(package) as archive:
        cover = Image.open(archive.open("cover.png"))
        assert cover.size[0] == 2 * cover.size[1]
        readme = archive.read("README.md").decode()
    assert "## Validation" in readme and "instance separation" in readme


def steps(tensor: dict, key: str) -> list[dict]:
    """The pre- or postprocessing of a tensor of an rdf.yaml without the dtype casts the spec adds."""
    return [step for step in tensor[key] if step["id"] != "ensure_dtype"]


def test_volume_package_has_a_z_axis(packages):
    rdf = read_package(packages["volume"][1])
    assert [a.get("id", a["type"]) for a in rdf["inputs"][0]["axes"]] == ["batch", "channel", "z", "y", "x"]
    assert steps(rdf["inputs"][0], "preprocessing")[0]["kwargs"]["axes"] == ["z", "y", "x"]
    with zipfile.ZipFile(packages["volume"][1]) as archive:
        test_input = np.load(io.BytesIO(archive.read("test_input.npy")))
    assert test_input.shape == (1, 1, 48, 48, 48)


def test_rdf_processing_of_each_normalisation_and_task(packages):
    isbi, three, restoration = (read_package(packages[n][1]) for n in ("isbi", "three_class", "restoration"))
    assert steps(isbi["inputs"][0], "preprocessing") == [
        {"id": "scale_linear", "kwargs": {"gain": 1 / 255, "offset": 0.0}}]
    assert steps(isbi["outputs"][0], "postprocessing") == [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    assert isbi["outputs"][0]["axes"][1]["channel_names"] == ["membrane", "cell"]
    context = valid_size_rule(Predictor.from_run(packages["isbi"][0], device="cpu").model)["context"]
    assert context > 0 and isbi["outputs"][0]["axes"][3]["size"]["offset"] == -2 * context
    assert steps(three["inputs"][0], "preprocessing") == [
        {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"], "eps": 1e-6}}]
    assert three["outputs"][0]["axes"][1]["channel_names"] == ["background", "interior", "border"]
    assert restoration["outputs"][0]["id"] == "restored"
    assert steps(restoration["outputs"][0], "postprocessing") == []


def core_predict(package: Path, image: np.ndarray) -> np.ndarray:
    """bioimageio.core's prediction for a 2D grey ``image``: the output ``(K, *S')``, whole image at once."""
    sample = bioimageio.core.predict(model=str(package), inputs=image[None, None].astype(np.float32))
    (tensor,) = sample.members.values()
    return tensor.data.to_numpy()[0]


@pytest.mark.parametrize("name", ["binary", "isbi", "three_class"])
def test_core_prediction_matches_unetkit(packages, name):
    """bioimageio.core and ``unetkit predict`` give the same labels on an image of a valid size (one tile
    for unetkit). A valid-padding net's package crops 2 * context: it gets the image mirror-padded by
    the context, as unetkit's overlap-tile pads it."""
    run, package = packages[name]
    predictor = predictor_for(run, device="cpu")
    image = cells((96, 128), seed=5)
    context = predictor.model.context()
    probabilities = core_predict(package, np.pad(image, context, mode="reflect") if context else image)
    assert probabilities.shape[1:] == image.shape
    if probabilities.shape[0] == 1:
        labels = (probabilities[0] > 0.5).astype(np.int64)
    else:
        labels = to_data_labels(probabilities.argmax(axis=0), predictor.target)
    expected = predictor.predict(image)
    assert expected.min() != expected.max()  # a mask with both classes, so agreement means something
    assert (labels == expected).mean() >= 0.999


def test_core_restoration_matches_unetkit_after_denormalising(packages):
    """The package's restored image is on the normalised scale (percentile normalisation cannot be inverted
    by a bioimage.io operation): times the input's scale plus its offset it is unetkit's restored image."""
    run, package = packages["restoration"]
    predictor = predictor_for(run, device="cpu")
    image = cells((96, 128), seed=6)
    restored = core_predict(package, image)
    offset, scale = normalization_params(image[None], predictor.normalize)
    np.testing.assert_allclose(restored * scale[:, None, None] + offset[:, None, None],
                               predictor.predict(image), rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_unetkit_predict_runs_the_package_as_the_run(packages, tmp_path, backend):
    run, package = packages["three_class"]
    image = tmp_path / "cells.png"
    Image.fromarray(cells((100, 90), seed=7).astype(np.uint8)).save(image)
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--backend", "torch"]) == 0
    assert main(["predict", str(package), str(image), "--out", str(tmp_path / "package"), "--device", "cpu",
                 "--backend", backend]) == 0
    from_run = np.asarray(Image.open(tmp_path / "run" / "cells.png"))
    from_package = np.asarray(Image.open(tmp_path / "package" / "cells.png"))
    assert from_run.max() == 255  # the dataset's binary 0/255 masks, via the three-class labels
    assert (from_package == from_run).mean() >= (1.0 if backend == "torch" else 0.999)


def test_the_napari_widget_loads_a_package_as_the_run(packages):
    from unetkit.napari.prediction import load_predictor, predict_layer

    run, package = packages["three_class"]
    image = cells((64, 80), seed=8)
    from_package = predict_layer(load_predictor(package, device="cpu"), image)
    from_run = predict_layer(load_predictor(run, device="cpu"), image)
    assert np.array_equal(from_package.labels, from_run.labels) and from_run.labels.max() == 1


def test_export_command_warns_what_the_format_cannot_express(tmp_path, capsys):
    run = set_data(make_run(tmp_path / "scaled", tiny_unet()), object_diameter=20.0)
    out = tmp_path / "pkg" / "scaled.zip"
    code = main(["export", str(run), "--format", "bioimageio", "--out", str(out), "--author", "A. Author",
                 "--name", "Scaled cells", "--cite", "unetkit=https://example.com/unetkit"])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: the run predicts at an object scale of 20 px" in err
    assert "warning: instance separation" in err and "tile" in err
    assert "--author" not in err  # an author was given
    rdf = read_package(out)
    assert rdf["name"] == "Scaled cells"
    assert {"text": "unetkit", "url": "https://example.com/unetkit"} in rdf["cite"]
    with zipfile.ZipFile(out) as archive:
        assert "object scale of 20 px" in archive.read("README.md").decode()
    assert main(["export", str(run), "--format", "onnx", "--author", "A. Author"]) == 2
    assert "apply to --format bioimageio only" in capsys.readouterr().err


def make_generation_run(root: Path) -> Path:
    """A generation RUN folder with a tiny diffusion U-Net."""
    network = DiffusionUNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                                  attention_levels=(1,), groups=4)
    save_model(DiffusionUNet(network).eval(), root)
    config = TrainConfig(task="generation")
    generation = dataclasses.replace(config.generation, network=network)
    save_config(dataclasses.replace(config, generation=generation), root / "config.json")
    return root


def test_unsupported_runs_are_refused_with_the_fix(tmp_path, capsys):
    out = tmp_path / "model.zip"
    generation = make_generation_run(tmp_path / "gen")
    with pytest.raises(ValueError, match=r"config\.json: .* generation \(diffusion\) run.*--format onnx"):
        export_bioimageio_run(generation, out)
    flows = set_data(make_run(tmp_path / "flows", tiny_unet(num_classes=3)), target="flows")
    with pytest.raises(ValueError, match=r"target 'flows'.*--format onnx"):
        export_bioimageio_run(flows, out)
    with pytest.raises(ValueError, match=r"super-resolution run \(scale 2\)"):
        export_bioimageio_run(make_restoration_run(tmp_path / "sr", scale=2), out)
    assert main(["export", str(tmp_path / "missing"), "--format", "bioimageio", "--out", str(out)]) == 2
    assert "missing not found: give the RUN folder" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob(".*part*")) == []


def test_interrupted_export_leaves_the_old_package(packages, tmp_path, monkeypatch):
    """A write killed half-way (here: the zip writer dies after some bytes) leaves the earlier package as it
    was and no temporary file."""
    import bioimageio.spec

    run, package = packages["binary"]
    out = tmp_path / "model.zip"
    out.write_bytes(package.read_bytes())

    def dies_half_way(descr, *, output_path, **kwargs):
        Path(output_path).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(bioimageio.spec, "save_bioimageio_package", dies_half_way)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore", BioimageioExportWarning)
        export_bioimageio_run(run, out)
    assert out.read_bytes() == package.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]


def test_foreign_or_damaged_packages_get_a_clear_error(tmp_path):
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump({"type": "model", "format_version": "0.5.12"}))
    with pytest.raises(ModelLoadError, match="unetkit did not write"):
        predictor_for(foreign)
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w") as archive:
        archive.writestr("rdf.yaml", "config: {unetkit: {package_version: 1, contract: {model: {depth: 9}}}}")
    with pytest.raises(ModelLoadError, match="damaged.zip"):
        predictor_for(damaged)


def test_importing_unetkit_does_not_import_bioimageio():
    code = (
        "import sys, unetkit, unetkit.cli, unetkit.export, unetkit.bioimageio_package; "
        "sys.exit(any(m.startswith('bioimageio') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
