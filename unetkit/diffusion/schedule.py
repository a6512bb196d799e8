"""Gaussian diffusion noise schedules (DDPM, improved DDPM) and their closed-form arithmetic.

A schedule of ``T`` steps holds ``betas[t]`` for ``t = 0 .. T-1`` and everything derived from
them (``alphas_cumprod[t] = prod_{s <= t} (1 - betas[s])``, written ``ab_t`` below). The forward
process is ``x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps`` with ``eps ~ N(0, I)``.

Two kinds of schedule:

* ``"linear"`` (Ho et al. 2020): betas evenly spaced from ``1e-4`` to ``0.02``, both scaled by
  ``1000 / steps`` so that a schedule of any length destroys the signal about as much as the
  original 1000-step one (clipped at ``0.999``, which only matters below 21 steps).
* ``"cosine"`` (Nichol & Dhariwal 2021): ``ab_t = f(t + 1) / f(0)`` with
  ``f(u) = cos((u / T + s) / (1 + s) * pi / 2) ** 2`` and ``s = 0.008``, realised through betas
  ``1 - f(t + 1) / f(t)`` clipped at ``0.999`` (the clip only matters for the last steps).

The tables are float64 tensors on the CPU. The methods take tensors ``(N, C, *S)`` and time
step indices ``t`` of shape ``(N,)`` (long, on any device) and compute on the input's device in
float32 (float64 inputs stay float64, so the arithmetic can be checked exactly).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "v")

COSINE_OFFSET = 0.008
MAX_BETA = 0.999


def check_prediction(prediction: str) -> None:
    """Raise ``ValueError`` unless ``prediction`` is one of :data:`PREDICTIONS`."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def linear_betas(steps: int) -> torch.Tensor:
    """``(steps,)`` float64: DDPM's linear betas ``1e-4 .. 0.02``, scaled by ``1000 / steps``.

    Below 21 steps the scaled betas reach 1; they are clipped at ``0.999`` like the cosine ones.
    """
    scale = 1000.0 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64).clamp(max=MAX_BETA)


def cosine_alpha_bar(u: torch.Tensor, steps: int, s: float = COSINE_OFFSET) -> torch.Tensor:
    """``f(u) = cos((u / steps + s) / (1 + s) * pi / 2) ** 2`` (not normalised by ``f(0)``)."""
    return torch.cos((u / steps + s) / (1.0 + s) * (math.pi / 2)) ** 2


def cosine_betas(steps: int) -> torch.Tensor:
    """``(steps,)`` float64: ``1 - f(t + 1) / f(t)`` clipped at ``0.999`` (Nichol & Dhariwal)."""
    f = cosine_alpha_bar(torch.arange(steps + 1, dtype=torch.float64), steps)
    return (1.0 - f[1:] / f[:-1]).clamp(max=MAX_BETA)


def sampling_timesteps(total: int, steps: int) -> list[int]:
    """``steps`` evenly spaced, strictly increasing step indices out of ``0 .. total-1``.

    The first is ``0`` and the last ``total - 1`` (a single step is ``[total - 1]``: one jump from
    pure noise). ``steps == total`` gives every step. Raises ``ValueError`` when ``steps`` is not in
    ``1 .. total``.
    """
    _check_count("total", total)
    _check_count("steps", steps)
    if steps > total:
        raise ValueError(f"cannot take {steps} sampling steps out of a {total}-step schedule")
    if steps == 1:
        return [total - 1]
    # The spacing (total - 1) / (steps - 1) is >= 1, so rounding half up keeps the indices distinct.
    spacing = (total - 1) / (steps - 1)
    return [int(math.floor(i * spacing + 0.5)) for i in range(steps)]


class NoiseSchedule:
    """A discrete diffusion schedule of ``steps`` steps and its derived tables.

    Attributes (float64 tensors of shape ``(steps,)`` on the CPU): ``betas``, ``alphas``
    (``1 - betas``), ``alphas_cumprod`` (``ab_t``), ``alphas_cumprod_prev`` (``ab_{t-1}``, with
    ``ab_{-1} = 1``), ``posterior_variance`` (``beta_t (1 - ab_{t-1}) / (1 - ab_t)``),
    ``posterior_log_variance_clipped`` (its log, with the zero at ``t = 0`` replaced by the value at
    ``t = 1``), ``posterior_mean_coef1`` / ``posterior_mean_coef2`` (the weights of ``x_0`` and
    ``x_t`` in the posterior mean). ``timestep_map`` (long ``(steps,)``) maps this schedule's step
    indices to those of the schedule it was respaced from (the identity for a fresh schedule).

    Args:
        kind: one of :data:`SCHEDULES`.
        steps: the number of diffusion steps ``T``.
    """

    def __init__(self, kind: str = "cosine", steps: int = 1000):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {kind!r}; expected one of {SCHEDULES}")
        _check_count("steps", steps)
        betas = linear_betas(steps) if kind == "linear" else cosine_betas(steps)
        self._set_betas(kind, betas, torch.arange(steps, dtype=torch.long))

    @classmethod
    def from_betas(cls, betas: torch.Tensor, kind: str = "custom",
                   timestep_map: Optional[torch.Tensor] = None) -> NoiseSchedule:
        """A schedule from explicit ``betas`` ``(T,)`` in ``(0, 1]`` (``kind`` is only a label)."""
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().flatten()
        if betas.numel() == 0:
            raise ValueError("a noise schedule needs at least one step")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        if timestep_map is None:
            timestep_map = torch.arange(betas.numel(), dtype=torch.long)
        timestep_map = torch.as_tensor(timestep_map, dtype=torch.long).cpu().flatten()
        if timestep_map.numel() != betas.numel():
            raise ValueError("timestep_map must have one entry per step")
        schedule = cls.__new__(cls)
        schedule._set_betas(kind, betas, timestep_map)
        return schedule

    def _set_betas(self, kind: str, betas: torch.Tensor, timestep_map: torch.Tensor) -> None:
        self.kind = kind
        self.steps = int(betas.numel())
        self.timestep_map = timestep_map
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        one_minus = 1.0 - self.alphas_cumprod
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / one_minus
        # The posterior variance is 0 at t = 0; its log is clipped to the value at t = 1 (or, for a
        # one-step schedule, to log beta_0). Sampling adds no noise at t = 0 anyway.
        first = self.posterior_variance[1:2] if self.steps > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.log(torch.cat([first, self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * torch.sqrt(self.alphas_cumprod_prev) / one_minus
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * torch.sqrt(self.alphas) / one_minus

    def __repr__(self) -> str:
        return f"NoiseSchedule(kind={self.kind!r}, steps={self.steps})"

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _gather(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` shaped ``(N, 1, ..., 1)`` to broadcast against ``like`` ``(N, C, *S)``."""
        t = torch.as_tensor(t)
        if t.dim() != 1 or t.numel() != like.shape[0]:
            raise ValueError(f"t must have shape (N,) = ({like.shape[0]},), got {tuple(t.shape)}")
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError("t must hold integer step indices")
        dtype = torch.promote_types(like.dtype, torch.float32) if like.dtype.is_floating_point \
            else torch.float32
        values = table.index_select(0, t.detach().to("cpu", torch.long))
        return values.to(device=like.device, dtype=dtype).view(-1, *([1] * (like.dim() - 1)))

    def _sqrt_ab(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sqrt(ab_t)`` and ``sqrt(1 - ab_t)``, each ``(N, 1, ..., 1)``."""
        return (self._gather(torch.sqrt(self.alphas_cumprod), t, like),
                self._gather(torch.sqrt(1.0 - self.alphas_cumprod), t, like))

    # -- forward process and training targets ------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise``.

        ``x0`` and ``noise``: ``(N, C, *S)``; ``t``: ``(N,)`` step indices. Returns ``(N, C, *S)``.
        """
        a, s = self._sqrt_ab(t, x0)
        return a * x0 + s * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                        prediction: str) -> torch.Tensor:
        """What the network learns to output at ``x_t``: ``noise`` for ``"eps"``, and for ``"v"``
        ``v = sqrt(ab_t) noise - sqrt(1 - ab_t) x0``. Shapes as :meth:`q_sample`."""
        check_prediction(prediction)
        if prediction == "eps":
            return noise.to(torch.promote_types(noise.dtype, torch.float32))
        a, s = self._sqrt_ab(t, x0)
        return a * noise - s * x0

    def predict_x0_and_eps(self, x_t: torch.Tensor, t: torch.Tensor, model_output: torch.Tensor,
                           prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Invert :meth:`training_target`: the ``(x0, eps)`` implied by ``model_output`` at ``x_t``.

        ``eps``: ``x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)``. ``v``: ``x0 = sqrt(ab) x_t - sqrt(1 - ab) v``
        and ``eps = sqrt(1 - ab) x_t + sqrt(ab) v``. All tensors ``(N, C, *S)``, ``t`` ``(N,)``.
        """
        check_prediction(prediction)
        if model_output.shape != x_t.shape:
            raise ValueError(
                f"model output {tuple(model_output.shape)} does not match x_t {tuple(x_t.shape)}"
            )
        a, s = self._sqrt_ab(t, x_t)
        if prediction == "eps":
            eps = model_output.to(a.dtype)
            return (x_t - s * eps) / a, eps
        return a * x_t - s * model_output, s * x_t + a * model_output

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise ``(x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)`` that takes ``x0`` to ``x_t``."""
        a, s = self._sqrt_ab(t, x_t)
        return (x_t - a * x0) / s

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor,
                    t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(N, C, *S)`` and clipped log variance (``(N, 1, ..., 1)`` expanded to ``x_t``'s shape)
        of ``q(x_{t-1} | x_t, x0) = N(coef1_t x0 + coef2_t x_t, posterior_variance_t I)``."""
        c1 = self._gather(self.posterior_mean_coef1, t, x_t)
        c2 = self._gather(self.posterior_mean_coef2, t, x_t)
        log_var = self._gather(self.posterior_log_variance_clipped, t, x_t)
        return c1 * x0 + c2 * x_t, log_var.expand(x_t.shape)

    # -- respacing ---------------------------------------------------------------------------------

    def respaced(self, timesteps: Sequence[int]) -> NoiseSchedule:
        """A schedule over a subset of this one's steps (improved DDPM respacing).

        ``timesteps`` (any order, duplicates ignored) are step indices of this schedule; the new
        schedule has ``len(set(timesteps))`` steps whose ``alphas_cumprod`` equal this schedule's at
        those steps, via betas ``1 - ab[t_k] / ab[t_{k-1}]``. Its ``timestep_map`` gives, for each of
        its steps, the step index of the ORIGINAL schedule (maps compose when respacing twice).
        """
        chosen = sorted({int(t) for t in timesteps})
        if not chosen:
            raise ValueError("respacing needs at least one time step")
        if chosen[0] < 0 or chosen[-1] >= self.steps:
            raise ValueError(f"time steps must lie in 0 .. {self.steps - 1}, got {chosen[0]} .. {chosen[-1]}")
        index = torch.tensor(chosen, dtype=torch.long)
        ab = self.alphas_cumprod.index_select(0, index)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        betas = 1.0 - ab / ab_prev
        return NoiseSchedule.from_betas(betas, kind=self.kind, timestep_map=self.timestep_map[index])
