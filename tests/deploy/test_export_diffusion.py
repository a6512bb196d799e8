"""Export of a generation run's denoiser to ONNX / TorchScript: parity with PyTorch, the contract, the CLI."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import onnxruntime
import pytest
import torch

from unetkit.checkpoint import save_model
from unetkit.cli import main
from unetkit.config import TrainConfig, save_config
from unetkit.data.classes import ClassInfo
from unetkit.export import export_run, load_backend, read_contract, sidecar_path
from unetkit.models.diffusion import DiffusionUNet, DiffusionUNetConfig
from unetkit.utils.atomic import atomic_write_json

TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), groups=4)
VARIANTS = {
    # condition, network options, input names, spatial size of the test input (traced at 16 per side)
    "class": ("class", dict(num_classes=3), ["noisy", "timestep", "class_label"], (24, 16)),
    "low_res": (
        "low_res", dict(cond_channels=1, noise_level_input=True),
        ["noisy", "timestep", "condition_image", "noise_level"], (24, 16),
    ),
    "mask-3d": (
        "mask", dict(dims=3, in_channels=2, out_channels=2, cond_dim=4, cond_channels=2),
        ["noisy", "timestep", "condition_vector", "condition_image"], (8, 12, 20),
    ),
}
FORMATS = {"onnx": "net.onnx", "torchscript": "net.torchscript.pt"}
MASK_CLASSES = ClassInfo(["background", "cell"])


def make_generation_run(root: Path, variant: str) -> tuple[Path, DiffusionUNet]:
    """A generation RUN folder holding a tiny, perturbed diffusion U-Net of ``variant``."""
    condition, options, _, _ = VARIANTS[variant]
    torch.manual_seed(0)
    network = DiffusionUNetConfig(**TINY, **options)
    model = DiffusionUNet(network).eval()
    with torch.no_grad():  # the residual branches and the head start at zero: make the output non-trivial
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_model(model, root)
    config = TrainConfig(task="generation")
    generation = dataclasses.replace(
        config.generation, condition=condition, network=network, intensity=(0.0, 255.0),
        classes=["a", "b", "c"] if condition == "class" else None,
    )
    save_config(dataclasses.replace(config, generation=generation), root / "config.json")
    if condition == "mask":
        atomic_write_json(root / "classes.json", MASK_CLASSES.to_dict())
    return root, model


def random_inputs(model: DiffusionUNet, spatial: tuple[int, ...], batch: int = 3) -> dict[str, torch.Tensor]:
    """Graph inputs by name for a batch of ``batch`` at ``spatial`` (only those the network has)."""
    g = torch.Generator().manual_seed(1)
    c = model.config
    values = {
        "noisy": torch.randn((batch, c.in_channels, *spatial), generator=g),
        "timestep": torch.tensor([0.0, 417.5, 999.0])[:batch],  # fractions allowed
        "class_label": torch.tensor([0, 2, c.num_classes])[:batch],  # the last: no class
        "condition_vector": torch.randn((batch, c.cond_dim), generator=g),
        "condition_image": torch.randn((batch, c.cond_channels, *spatial), generator=g),
        "noise_level": torch.tensor([0.0, 0.1, 0.3])[:batch],
    }
    present = {
        "class_label": c.num_classes > 0, "condition_vector": c.cond_dim > 0,
        "condition_image": c.cond_channels > 0, "noise_level": c.noise_level_input,
    }
    return {k: v for k, v in values.items() if present.get(k, True)}


def eager(model: DiffusionUNet, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The PyTorch model on the graph inputs."""
    with torch.inference_mode():
        return model(
            inputs["noisy"], inputs["timestep"], y=inputs.get("class_label"),
            cond=inputs.get("condition_vector"), cond_image=inputs.get("condition_image"),
            noise_level=inputs.get("noise_level"),
        )


def run_file(path: Path, fmt: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The exported file on the inputs (ONNX Runtime by name, TorchScript positionally)."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == list(inputs)
        assert [o.name for o in session.get_outputs()] == ["prediction"]
        return torch.from_numpy(session.run(["prediction"], {k: v.numpy() for k, v in inputs.items()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, but asked for
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return module(*inputs.values())


Exported = tuple[Path, DiffusionUNet, dict[str, Path]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Exported]]:
    """``exported(variant)``: its RUN folder, model and files by format (default paths), made once.

    The nets are tiny: the module runs on one thread (faster than two on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cache: dict[str, Exported] = {}

    def get(variant: str) -> Exported:
        if variant not in cache:
            run, model = make_generation_run(tmp_path_factory.mktemp(variant) / "run", variant)
            cache[variant] = (run, model, {fmt: export_run(run, fmt) for fmt in FORMATS})
        return cache[variant]

    yield get
    torch.set_num_threads(threads)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exported_denoiser_matches_pytorch(exported, variant, fmt):
    """Another batch and spatial size than traced, fractional time steps, the null class: same output."""
    _, model, files = exported(variant)
    _, _, names, spatial = VARIANTS[variant]
    inputs = random_inputs(model, spatial)
    assert list(inputs) == names
    expected = eager(model, inputs)
    assert expected.abs().mean() > 1e-3  # not the zero output of an untrained network
    got = run_file(files[fmt], fmt, inputs)
    assert got.shape == expected.shape == (3, model.config.out_channels, *spatial)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def check_contract(
    contract: dict[str, Any], names: list[str], mask_classes: Optional[dict[str, Any]]
) -> None:
    assert contract["task"] == "generation"
    assert contract["inputs"] == names and contract["output"] == "prediction"
    assert contract["prediction"] == "eps"
    assert contract["schedule"] == {"kind": "cosine", "timesteps": 1000}
    assert contract["intensity"] == [0.0, 255.0]
    assert contract["size_multiple"] == 2
    assert contract["mask_classes"] == mask_classes
    for key in ("unetkit_version", "contract_version", "condition", "scale", "classes", "image_channels",
                "dims", "sampling"):
        assert key in contract
    assert "out = uncond + g * (cond - uncond)" in contract["sampling"]


def test_contract_is_in_the_file_and_beside_it(exported):
    run, _, files = exported("class")
    assert files == {"onnx": run / "model.onnx", "torchscript": run / "model.torchscript.pt"}
    contract = json.loads(sidecar_path(files["onnx"]).read_text())
    assert read_contract(files["onnx"]) == contract
    check_contract(contract, VARIANTS["class"][2], None)
    assert contract["condition"] == "class" and contract["classes"] == ["a", "b", "c"]
    assert contract["image_channels"] == 1 and contract["dims"] == 2
    assert "class_label = 3 (no class)" in contract["sampling"]
    ts_file = files["torchscript"]
    assert read_contract(ts_file) == json.loads(sidecar_path(ts_file).read_text()) == contract

    _, _, mask_files = exported("mask-3d")
    mask_contract = read_contract(mask_files["onnx"])
    check_contract(mask_contract, VARIANTS["mask-3d"][2], MASK_CLASSES.to_dict())
    assert "condition_vector = zeros" in mask_contract["sampling"]
    assert mask_contract["condition"] == "mask" and mask_contract["classes"] is None
    assert mask_contract["image_channels"] == 2 and mask_contract["dims"] == 3


def test_export_command_and_the_predictor_backends(exported, tmp_path, capsys):
    run, _, files = exported("low_res")
    out = tmp_path / "cli.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.is_file() and sidecar_path(out).is_file()
    assert read_contract(out) == read_contract(files["onnx"])
    assert read_contract(out)["condition"] == "low_res"
    assert "does not apply" in read_contract(out)["sampling"]  # no class or vector input to drop
    for kind, source in (("onnxruntime", run), ("onnxruntime", out), ("torchscript", files["torchscript"])):
        with pytest.raises(ValueError, match="generation"):
            load_backend(kind, source)
