"""Gaussian diffusion: noise schedules, training targets and samplers (DDPM, DDIM, guidance).

* :class:`NoiseSchedule`: linear (DDPM) or cosine (improved DDPM) betas, the forward process
  (:meth:`~NoiseSchedule.q_sample`), ``eps`` / ``v`` training targets and their inverse, the
  posterior ``q(x_{t-1} | x_t, x_0)`` and respacing to fewer steps.
* :func:`sample`: DDPM ancestral sampling or DDIM from a denoiser ``(x_t, t) -> eps or v``.
* :func:`guided_denoiser`: classifier-free guidance around a conditional model.
"""

from __future__ import annotations

from .sampling import SAMPLERS, Denoiser, guided_denoiser, sample
from .schedule import PREDICTIONS, SCHEDULES, NoiseSchedule, sampling_timesteps

__all__ = [
    "PREDICTIONS", "SAMPLERS", "SCHEDULES", "Denoiser", "NoiseSchedule", "guided_denoiser", "sample",
    "sampling_timesteps",
]
