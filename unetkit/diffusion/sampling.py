"""Drawing samples from a trained denoiser: DDPM ancestral sampling, DDIM, classifier-free guidance.

A *denoiser* is any callable ``denoiser(x_t, t) -> output`` with ``x_t`` ``(N, C, *S)`` and ``t``
``(N,)`` long step indices of the ORIGINAL (training) schedule, returning the network's
prediction ``(N, C, *S)``: the noise ``eps`` or the velocity ``v`` (see
:meth:`NoiseSchedule.training_target`). :func:`guided_denoiser` builds one from a conditional
model with classifier-free guidance.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from .schedule import NoiseSchedule, check_prediction, sampling_timesteps

Denoiser = Callable[[Tensor, Tensor], Tensor]

SAMPLERS = ("ddim", "ddpm")


def _randn(shape: Sequence[int], generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """Standard normal float32 noise on ``device``, drawn on the generator's own device."""
    source = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=source, dtype=torch.float32).to(device)


@torch.no_grad()
def sample(denoiser: Denoiser, shape: Sequence[int], schedule: NoiseSchedule, *, sampler: str = "ddim",
           steps: int = 50, eta: float = 0.0, prediction: str = "eps", noise: Optional[Tensor] = None,
           generator: Optional[torch.Generator] = None, device: Any = None, clip_x0: bool = True,
           progress: Optional[Callable[[int, int], None]] = None) -> Tensor:
    """Draw ``x_0`` ``(N, C, *S)`` (float32) by running the reverse process from pure noise.

    Args:
        denoiser: ``(x_t, t) -> eps or v``, see the module docstring; called once per step, under
            ``torch.no_grad()`` (put the network in eval mode yourself).
        shape: ``(N, C, *S)``, the shape of the samples.
        schedule: the schedule the denoiser was trained with (possibly itself respaced).
        sampler: ``"ddim"``: DDIM (Song et al.) on ``sampling_timesteps(schedule.steps, steps)``,
            with ``eta`` scaling the noise (``0``: deterministic, ``1``: DDPM-like variance).
            ``"ddpm"``: ancestral sampling with the posterior variance on the schedule respaced to
            those same steps (``steps == schedule.steps`` is plain DDPM).
        steps: the number of denoising steps, ``1 .. schedule.steps``.
        eta: DDIM noise scale, ``>= 0`` (ignored by ``"ddpm"``).
        prediction: what the denoiser outputs, one of :data:`~unetkit.diffusion.PREDICTIONS`.
        noise: the starting noise ``x_T`` of ``shape``; drawn with ``generator`` when omitted.
        generator: the random source for the starting noise (when not given) and for the noise of
            stochastic steps. Its device may differ from ``device``.
        device: where to sample; defaults to ``noise``'s device, else the CPU.
        clip_x0: clip each ``x_0`` prediction to ``[-1, 1]`` (the noise estimate is recomputed from
            the clipped ``x_0``, so the step stays consistent).
        progress: ``progress(done, total)`` after each step, ``done = 1 .. total``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    check_prediction(prediction)
    if not (isinstance(eta, (int, float)) and eta >= 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be (N, C, *S), got {shape}")
    sub = schedule.respaced(sampling_timesteps(schedule.steps, steps))

    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
        device = torch.device(device) if device is not None else noise.device
        x = noise.detach().to(device=device, dtype=torch.float32)
    else:
        device = torch.device(device) if device is not None else torch.device("cpu")
        x = _randn(shape, generator, device)

    n = shape[0]
    total = sub.steps
    model_steps = sub.timestep_map.tolist()
    for done, i in enumerate(reversed(range(total)), start=1):
        t = torch.full((n,), i, dtype=torch.long, device=device)
        t_model = torch.full((n,), model_steps[i], dtype=torch.long, device=device)
        output = denoiser(x, t_model)
        if tuple(output.shape) != shape:
            raise ValueError(f"the denoiser returned shape {tuple(output.shape)}, expected {shape}")
        x0, eps = sub.predict_x0_and_eps(x, t, output.float(), prediction)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = sub.eps_from_x0(x, t, x0)
        if sampler == "ddpm":
            mean, log_var = sub.q_posterior(x0, x, t)
            x = mean
            if i > 0:  # no noise on the last step (the posterior variance is 0 there)
                x = x + torch.exp(0.5 * log_var) * _randn(shape, generator, device)
        else:
            ab = float(sub.alphas_cumprod[i])
            ab_prev = float(sub.alphas_cumprod_prev[i])
            sigma = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
            direction = math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0))
            x = math.sqrt(ab_prev) * x0 + direction * eps
            if sigma > 0:
                x = x + sigma * _randn(shape, generator, device)
        x = x.float()
        if progress is not None:
            progress(done, total)
    return x


def _repeat_batch(value: Any, n: int) -> Any:
    """``value`` repeated twice along the batch axis if it is a tensor ``(n, ...)``, else unchanged."""
    if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == n:
        return torch.cat([value, value])
    return value


def guided_denoiser(model: Callable[..., Tensor], *, guidance: float, y: Optional[Tensor] = None,
                    null_class: Optional[int] = None, cond: Optional[Tensor] = None,
                    **model_kwargs: Any) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans): ``(x_t, t) -> uncond + guidance * (cond - uncond)``.

    ``guidance`` 0 is the unconditional model, 1 the conditional model, > 1 a stronger pull towards
    the condition. The model is called as ``model(x, t, y=y, cond=cond, **model_kwargs)``; ``y`` is
    ``(N,)`` long class labels, ``cond`` ``(N, ...)`` a conditioning tensor. The unconditional branch
    replaces every label with ``null_class`` and ``cond`` with zeros; ``model_kwargs`` (e.g.
    ``cond_image``, ``noise_level``) go unchanged to both branches.

    With ``guidance == 1`` or nothing to guide (``y`` and ``cond`` both ``None``) the model is
    called once, conditionally; with ``guidance == 0`` only the unconditional branch runs; otherwise
    both branches run in ONE call on a ``2N`` batch (conditional first), in which ``x``, ``t``,
    ``y``, ``cond`` and every tensor keyword argument whose first dimension is ``N`` are repeated
    along the batch axis (other keyword arguments are passed as they are).
    """
    guidance = float(guidance)
    if not math.isfinite(guidance):
        raise ValueError(f"guidance must be finite, got {guidance}")
    if y is not None and null_class is None and guidance != 1.0:
        raise ValueError("classifier-free guidance on labels y needs null_class (the 'no label' class)")

    def conditional(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t, y=y, cond=cond, **model_kwargs)

    if guidance == 1.0 or (y is None and cond is None):
        return conditional

    null_y = torch.full_like(y, int(null_class)) if y is not None else None
    null_cond = torch.zeros_like(cond) if cond is not None else None

    def unconditional(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t, y=null_y, cond=null_cond, **model_kwargs)

    if guidance == 0.0:
        return unconditional

    def guided(x: Tensor, t: Tensor) -> Tensor:
        n = x.shape[0]
        both_y = torch.cat([y, null_y]) if y is not None else None
        both_cond = torch.cat([cond, null_cond]) if cond is not None else None
        kwargs = {key: _repeat_batch(value, n) for key, value in model_kwargs.items()}
        out = model(torch.cat([x, x]), torch.cat([t, t]), y=both_y, cond=both_cond, **kwargs)
        out_cond, out_uncond = out[:n], out[n:]
        return out_uncond + guidance * (out_cond - out_uncond)

    return guided
