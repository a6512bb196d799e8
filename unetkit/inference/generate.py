"""Drawing images from a trained diffusion run, alone or as a cascade of runs.

:class:`DiffusionSampler` wraps a generation run's network with its noise schedule, classes,
condition and intensity range; :func:`generate_cascade` feeds a base generator's samples to
super-resolution stages (runs trained with ``condition = "low_res"``), each raising the resolution
by its ``scale``. Samples are tensors in [-1, 1]; :meth:`DiffusionSampler.to_data` turns them
into arrays on the training images' own scale and type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import GenerationConfig, TrainConfig
from ..data.classes import ClassInfo
from ..data.generation import from_unit_range, one_hot, to_unit_range
from ..data.io import DataError
from ..diffusion import NoiseSchedule, guided_denoiser, sample

PathLike = Union[str, Path]


def _device(name: Union[str, torch.device]) -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DiffusionSampler:
    """A trained diffusion network ready to sample.

    ``image_size``: the side of the images it was trained on (the size of unconditional and
    class-conditional samples; image-conditioned samples take the condition's size).
    ``mask_classes``: the masks' classes of a mask-conditioned run.
    """

    def __init__(
        self,
        model: nn.Module,
        generation: GenerationConfig,
        image_size: int,
        *,
        mask_classes: Optional[ClassInfo] = None,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.generation = generation
        self.image_size = image_size
        self.mask_classes = mask_classes
        self.schedule = NoiseSchedule(generation.schedule, generation.timesteps)

    @classmethod
    def from_run(cls, path: PathLike, device: Union[str, torch.device] = "auto") -> DiffusionSampler:
        """The sampler of a RUN folder trained with ``--task generate``."""
        from ..training.run import Run

        run = Run.load(path)
        if run.task != "generation":
            raise ValueError(
                f"{path} is a {run.task} run: `unetkit generate` draws from runs trained with --task generate"
            )
        return cls.from_config(run.model, run.config, run.classes, device)

    @classmethod
    def from_config(
        cls, model: nn.Module, config: TrainConfig, mask_classes: Optional[ClassInfo] = None,
        device: Union[str, torch.device] = "cpu",
    ) -> DiffusionSampler:
        return cls(model, config.generation, config.data.patch_size, mask_classes=mask_classes, device=device)

    # --------------------------------------------------------------------------- what it is
    @property
    def condition(self) -> str:
        return self.generation.condition or "none"

    @property
    def classes(self) -> list[str]:
        return list(self.generation.classes or [])

    @property
    def channels(self) -> int:
        return self.generation.network.in_channels

    @property
    def scale(self) -> int:
        """Output pixels per condition pixel (super-resolution stages; 1 otherwise)."""
        return self.generation.scale if self.condition == "low_res" else 1

    def class_index(self, name: str) -> int:
        if name not in self.classes:
            known = ", ".join(self.classes) if self.classes else "none: the run is not class-conditional"
            raise ValueError(f"unknown class {name!r}; the run's classes: {known}")
        return self.classes.index(name)

    def labels(self, n: int, class_name: Optional[str] = None) -> Optional[torch.Tensor]:
        """``(n,)`` class indices: all ``class_name``, or the classes in turn (``None`` without classes)."""
        if not self.classes:
            if class_name is not None:
                self.class_index(class_name)
            return None
        if class_name is not None:
            return torch.full((n,), self.class_index(class_name), dtype=torch.long)
        return torch.arange(n, dtype=torch.long) % len(self.classes)

    # ------------------------------------------------------------------------- conditions
    def condition_from_image(self, image: np.ndarray, source: str = "the condition") -> torch.Tensor:
        """A low-resolution image ``(C, h, w)`` on the data's scale -> the condition ``(1, C, h*s, w*s)``."""
        if self.condition != "low_res":
            raise ValueError(f"the run is conditioned on {self.condition!r}, not on a low-resolution image")
        if image.ndim != 3 or image.shape[0] != self.channels:
            raise DataError(
                f"{source}: shape {image.shape} but the run takes {self.channels}-channel 2D images "
                f"({'grey' if self.channels == 1 else 'RGB' if self.channels == 3 else 'multi-channel'})"
            )
        unit = to_unit_range(image, self.generation.intensity)
        return torch.from_numpy(np.ascontiguousarray(_upscale(unit, self.scale)))[None]

    def condition_from_labels(self, labels: np.ndarray) -> torch.Tensor:
        """Class ids ``(*S)`` of a mask -> the one-hot condition ``(1, K, *S)``."""
        if self.condition != "mask" or self.mask_classes is None:
            raise ValueError(f"the run is conditioned on {self.condition!r}, not on a mask")
        return torch.from_numpy(one_hot(labels, self.mask_classes.num_classes))[None]

    # ---------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: Optional[torch.Tensor] = None,
        condition: Optional[torch.Tensor] = None,
        steps: int = 50,
        sampler: str = "ddim",
        eta: float = 0.0,
        guidance: float = 1.0,
        condition_noise: float = 0.0,
        seed: int = 0,
        batch_size: int = 64,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> torch.Tensor:
        """``n`` samples ``(n, C, *S)`` in [-1, 1] (on the CPU).

        ``labels``: ``(n,)`` class indices (class-conditional runs; ``None`` = the classes in turn);
        ``condition``: ``(n, K, *S)`` or ``(1, K, *S)`` for image-conditioned runs (any size: padded by
        reflection to the network's size multiple, the samples cropped back); ``guidance``: classifier-
        free guidance (0 = unconditional, 1 = conditional, > 1 stronger); ``condition_noise``: the
        conditioning-augmentation level given to a super-resolution stage. The noise is drawn from
        ``seed`` for all ``n`` at once, so a sample depends on its seed and index only.
        """
        if self.condition in ("low_res", "mask"):
            if condition is None:
                raise ValueError(f"a {self.condition}-conditioned run needs a condition image per sample")
            if condition.shape[0] not in (1, n):
                raise ValueError(f"{condition.shape[0]} condition images for {n} samples")
            spatial = tuple(condition.shape[2:])
        else:
            spatial = (self.image_size,) * self.generation.network.dims
        if labels is None:
            labels = self.labels(n)
        multiple = self.model.size_multiple
        padded = tuple(-(-s // multiple) * multiple for s in spatial)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((n, self.channels, *padded), generator=generator)
        out = []
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            kwargs: dict[str, Any] = {}
            if condition is not None:
                cond = condition if condition.shape[0] == n else condition.expand(n, *condition.shape[1:])
                kwargs["cond_image"] = _pad_to(cond[start:stop].float(), padded).to(self.device)
            if self.generation.network.noise_level_input:
                level = float(condition_noise)
                kwargs["noise_level"] = torch.full((stop - start,), level, device=self.device)
                if condition_noise > 0:
                    cond_noise = torch.randn(kwargs["cond_image"].shape, generator=generator).to(self.device)
                    kwargs["cond_image"] = kwargs["cond_image"] + condition_noise * cond_noise
            y = labels[start:stop].to(self.device) if labels is not None else None
            denoiser = guided_denoiser(
                self.model, guidance=guidance, y=y,
                null_class=len(self.classes) if self.classes else None, **kwargs,
            )
            x = sample(
                denoiser, (stop - start, self.channels, *padded), self.schedule, sampler=sampler, steps=steps,
                eta=eta, prediction=self.generation.prediction, noise=noise[start:stop].to(self.device),
                generator=generator, device=self.device, progress=progress,
            )
            out.append(x.float().cpu()[(slice(None), slice(None), *(slice(0, s) for s in spatial))])
        return torch.cat(out)

    def to_data(self, samples: torch.Tensor) -> list[np.ndarray]:
        """Samples in [-1, 1] -> arrays ``(C, *S)`` on the data's scale: uint8 for 8-bit training images,
        uint16 for 16-bit, float32 otherwise."""
        return [from_unit_range(s.numpy(), self.generation.intensity, self.dtype) for s in samples]

    @property
    def dtype(self) -> np.dtype:
        low, high = self.generation.intensity
        if (low, high) == (0.0, 255.0):
            return np.dtype(np.uint8)
        if (low, high) == (0.0, 65535.0):
            return np.dtype(np.uint16)
        return np.dtype(np.float32)


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    from ..data.degrade import upscale

    return upscale(image, scale) if scale > 1 else image


def _pad_to(x: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Reflect-pad ``(N, K, *S)`` at the end of each axis up to ``spatial``."""
    pads: list[int] = []
    for have, want in zip(reversed(x.shape[2:]), reversed(spatial)):
        pads += [0, want - have]
    if not any(pads):
        return x
    mode = "reflect" if all(w - h < h for h, w in zip(x.shape[2:], spatial)) else "replicate"
    return F.pad(x, pads, mode=mode)


def check_cascade(stages: Sequence[DiffusionSampler], names: Sequence[str]) -> None:
    """Refuse a cascade whose stages do not fit: each stage after the first must be a super-resolution
    stage whose low-resolution side (its training size / scale) is the previous stage's output side."""
    size = stages[0].image_size
    for previous, stage, name in zip(stages, stages[1:], names[1:]):
        if stage.condition != "low_res":
            raise ValueError(
                f"{name} is a {stage.condition!r} run: every stage after the first must be a "
                "super-resolution stage (trained with --task generate --condition low-res)"
            )
        if stage.channels != previous.channels:
            raise ValueError(f"{name} takes {stage.channels}-channel images; the stage before gives "
                             f"{previous.channels}")
        expected = stage.image_size // stage.scale
        if size != expected:
            raise ValueError(
                f"{name} raises {expected}-pixel images x{stage.scale} (trained on {stage.image_size}-pixel "
                f"images), but the stage before gives {size}-pixel images: train the stage with "
                f"--data.patch-size {size * stage.scale}, or use a stage of scale {stage.image_size // size}"
            )
        size *= stage.scale


def generate_cascade(
    stages: Sequence[DiffusionSampler],
    n: int,
    *,
    names: Optional[Sequence[str]] = None,
    labels: Optional[torch.Tensor] = None,
    condition: Optional[torch.Tensor] = None,
    condition_noise: float = 0.0,
    **options: Any,
) -> list[torch.Tensor]:
    """Sample the first stage, then each super-resolution stage conditioned on the stage before
    (bicubic-upscaled by its scale); returns every stage's samples (the last is the result).
    ``options`` (steps, sampler, guidance, seed, ...) go to every stage's :meth:`DiffusionSampler.sample`."""
    names = list(names or [f"stage {i + 1}" for i in range(len(stages))])
    check_cascade(stages, names)
    first = stages[0].sample(
        n, labels=labels, condition=condition, condition_noise=condition_noise, **options
    )
    outputs = [first]
    for stage in stages[1:]:
        low = outputs[-1].numpy()
        cond = torch.from_numpy(np.stack([_upscale(x, stage.scale) for x in low]))
        outputs.append(stage.sample(n, condition=cond, condition_noise=condition_noise, **options))
    return outputs


def image_grid(images: Sequence[np.ndarray], columns: int, pad: int = 1) -> np.ndarray:
    """2D images ``(C, H, W)`` in [-1, 1] -> one uint8 picture ``(H', W', 3)`` of ``columns`` per row."""
    if not images:
        raise ValueError("no images to put in a grid")
    c, h, w = images[0].shape
    rows = -(-len(images) // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        x = np.clip((np.asarray(image, dtype=np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
        x = np.repeat(x, 3, axis=0) if c == 1 else x[:3]
        r, k = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[top:top + h, left:left + w] = np.moveaxis(x, 0, -1)
    return grid


def save_grid(path: Path, images: Sequence[np.ndarray], columns: int) -> Path:
    """:func:`image_grid` written as a PNG (small grids enlarged to about 600 px), atomically."""
    from PIL import Image

    from ..utils.atomic import atomic_path

    grid = image_grid(images, columns)
    zoom = max(1, min(32, 600 // grid.shape[1]))
    picture = Image.fromarray(grid)
    if zoom > 1:
        picture = picture.resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def read_low_res(sampler: DiffusionSampler, path: Path) -> torch.Tensor:
    """The condition of one low-resolution image file."""
    from ..data.pairs import read_checked_image

    return sampler.condition_from_image(read_checked_image(path), str(path))


def read_mask(sampler: DiffusionSampler, path: Path) -> torch.Tensor:
    """The condition of one mask file (decoded with the run's mask classes)."""
    from ..data.io import read_label_image

    if sampler.mask_classes is None:
        raise ValueError("the run is not mask-conditioned")
    return sampler.condition_from_labels(sampler.mask_classes.decode(read_label_image(path), source=path))


__all__ = [
    "DiffusionSampler", "check_cascade", "generate_cascade", "image_grid", "read_low_res", "read_mask",
    "save_grid",
]
