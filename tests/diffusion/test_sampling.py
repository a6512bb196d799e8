"""Samplers with exact (oracle) denoisers, determinism, progress, errors, and classifier-free guidance."""

import math

import pytest
import torch

from unetkit.diffusion import (
    PREDICTIONS,
    SAMPLERS,
    NoiseSchedule,
    guided_denoiser,
    sample,
    sampling_timesteps,
)


def coefficients(schedule, t, like):
    """sqrt(ab_t) and sqrt(1 - ab_t) from the schedule's float64 table, shaped to broadcast."""
    ab = schedule.alphas_cumprod[t.cpu()].view(-1, *([1] * (like.dim() - 1)))
    return ab.sqrt().float(), (1 - ab).sqrt().float()


def point_oracle(schedule, x_star, prediction):
    """The exact denoiser when all data is the single point x_star (t: ORIGINAL step indices)."""

    def denoiser(x_t, t):
        a, s = coefficients(schedule, t, x_t)
        eps = (x_t - a * x_star) / s
        return eps if prediction == "eps" else a * eps - s * x_star

    return denoiser


def gaussian_oracle(schedule, mean, std, prediction):
    """The exact denoiser for data ~ N(mean, std^2) per element: E[x0 | x_t] is linear in x_t."""

    def denoiser(x_t, t):
        a, s = coefficients(schedule, t, x_t)
        x0 = mean + a * std**2 / (a**2 * std**2 + s**2) * (x_t - a * mean)
        eps = (x_t - a * x0) / s
        return eps if prediction == "eps" else a * eps - s * x0

    return denoiser


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("sampler,steps,eta", [("ddim", 20, 0.0), ("ddim", 20, 1.0), ("ddpm", 50, 0.0)])
def test_single_point_oracle_recovers_the_point(kind, prediction, sampler, steps, eta):
    sch = NoiseSchedule(kind, 1000)
    gen = torch.Generator().manual_seed(3)
    x_star = torch.rand(1, 2, 6, 5, generator=gen) * 1.8 - 0.9
    out = sample(point_oracle(sch, x_star, prediction), (3, 2, 6, 5), sch, sampler=sampler, steps=steps,
                 eta=eta, prediction=prediction, generator=gen)
    assert out.shape == (3, 2, 6, 5) and out.dtype == torch.float32
    assert torch.allclose(out, x_star.expand_as(out), atol=1e-4)


@pytest.mark.parametrize("sampler,steps", [("ddim", 100), ("ddpm", 250)])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_gaussian_oracle_gives_the_data_distribution(sampler, steps, prediction):
    # Unlike a single point, this checks the whole trajectory (including the step map): the
    # sample mean and spread must come out right, and they only do when every step is consistent.
    sch = NoiseSchedule("cosine", 1000)
    gen = torch.Generator().manual_seed(0)
    out = sample(gaussian_oracle(sch, 0.3, 0.2, prediction), (4000, 1, 1), sch, sampler=sampler,
                 steps=steps, prediction=prediction, generator=gen, clip_x0=False)
    assert out.mean().item() == pytest.approx(0.3, abs=0.01)
    assert out.std().item() == pytest.approx(0.2, abs=0.015)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_denoiser_receives_original_step_indices(sampler):
    sch = NoiseSchedule("linear", 1000)
    seen = []

    def denoiser(x_t, t):
        assert t.dtype == torch.long and t.shape == (2,)
        assert (t == t[0]).all()
        seen.append(int(t[0]))
        return torch.zeros_like(x_t)

    sample(denoiser, (2, 1, 3), sch, sampler=sampler, steps=10)
    assert seen == sampling_timesteps(1000, 10)[::-1]
    # A respaced schedule still hands out the indices of the schedule it came from.
    seen.clear()
    sub = sch.respaced(range(0, 1000, 4))
    sample(denoiser, (2, 1, 3), sub, sampler=sampler, steps=5)
    assert seen == [4 * i for i in sampling_timesteps(250, 5)][::-1]


def noisy_denoiser(x_t, t):
    """Not an oracle: a smooth function of x_t and t, enough to make trajectories differ."""
    return torch.tanh(x_t) * (t.float().view(-1, 1, 1, 1) / 1000) + 0.1 * x_t


def test_ddim_eta_zero_is_deterministic():
    sch = NoiseSchedule("cosine", 1000)
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a = sample(noisy_denoiser, noise.shape, sch, steps=10, noise=noise,
               generator=torch.Generator().manual_seed(1))
    b = sample(noisy_denoiser, noise.shape, sch, steps=10, noise=noise.clone(),
               generator=torch.Generator().manual_seed(2))
    c = sample(noisy_denoiser, noise.shape, sch, steps=10, noise=noise.clone())
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, sample(noisy_denoiser, noise.shape, sch, steps=10, noise=noise + 0.5))


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.5), ("ddim", 1.0), ("ddpm", 0.0)])
def test_stochastic_samplers_depend_on_the_generator(sampler, eta):
    sch = NoiseSchedule("cosine", 1000)
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def run(seed):
        return sample(noisy_denoiser, noise.shape, sch, sampler=sampler, steps=10, eta=eta, noise=noise,
                      generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


def test_starting_noise_from_the_generator():
    sch = NoiseSchedule("linear", 100)
    a = sample(noisy_denoiser, (2, 1, 4, 4), sch, steps=5, generator=torch.Generator().manual_seed(7))
    b = sample(noisy_denoiser, (2, 1, 4, 4), sch, steps=5, generator=torch.Generator().manual_seed(7))
    c = sample(noisy_denoiser, (2, 1, 4, 4), sch, steps=5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The same noise passed explicitly gives the same sample.
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, sample(noisy_denoiser, (2, 1, 4, 4), sch, steps=5, noise=noise))


def test_clip_x0_bounds_a_one_step_sample():
    sch = NoiseSchedule("cosine", 1000)
    noise = torch.randn(4, 1, 8, generator=torch.Generator().manual_seed(0)) * 5

    def far(x_t, t):  # predicts eps = -x_t: x0 far outside [-1, 1]
        return -x_t

    clipped = sample(far, noise.shape, sch, steps=1, noise=noise)
    assert clipped.abs().max() <= 1.0 + 1e-6
    assert sample(far, noise.shape, sch, steps=1, noise=noise, clip_x0=False).abs().max() > 1.5


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_progress_callback_counts(sampler):
    calls = []
    sample(noisy_denoiser, (1, 1, 2, 2), NoiseSchedule("linear", 100), sampler=sampler, steps=7,
           progress=lambda i, total: calls.append((i, total)))
    assert calls == [(i, 7) for i in range(1, 8)]


def test_plain_ddpm_uses_every_step():
    calls = []
    sample(noisy_denoiser, (1, 1, 2, 2), NoiseSchedule("linear", 30), sampler="ddpm", steps=30,
           progress=lambda i, total: calls.append(i))
    assert calls == list(range(1, 31))


@pytest.mark.parametrize("bad", [dict(sampler="euler"), dict(prediction="x0"), dict(steps=101),
                                 dict(steps=0), dict(eta=-0.1), dict(noise=torch.zeros(1, 1, 3))])
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError):
        sample(noisy_denoiser, (1, 1, 2, 2), NoiseSchedule("linear", 100), **bad)


def test_wrong_denoiser_output_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        sample(lambda x, t: x[:, :1], (1, 2, 3), NoiseSchedule("linear", 100), steps=2)


# -- classifier-free guidance -------------------------------------------------------------------------


class FakeModel:
    """model(x, t, y=..., cond=..., **kw): a different answer per label and cond; records calls."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, t, y=None, cond=None, cond_image=None, noise_level=0.0):
        self.batches.append(x.shape[0])
        out = x * 2 + t.float().view(-1, 1, 1) / 100 + noise_level
        if y is not None:
            out = out + (y.float() + 1).view(-1, 1, 1) ** 2
        if cond is not None:
            out = out + cond.sum(dim=1).view(-1, 1, 1)
        if cond_image is not None:
            out = out * cond_image
        return out


NULL = 9


def setup():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, generator=gen)
    t = torch.tensor([5, 50, 500])
    y = torch.tensor([0, 4, 2])
    cond = torch.randn(3, 6, generator=gen)
    cond_image = torch.rand(3, 2, 4, generator=gen) + 0.5
    return x, t, y, cond, cond_image


def test_guidance_zero_is_the_unconditional_model():
    x, t, y, cond, cond_image = setup()
    model = FakeModel()
    out = guided_denoiser(model, guidance=0.0, y=y, null_class=NULL, cond=cond, cond_image=cond_image)(x, t)
    expected = FakeModel()(x, t, y=torch.full_like(y, NULL), cond=torch.zeros_like(cond),
                           cond_image=cond_image)
    assert torch.equal(out, expected)
    assert model.batches == [3]


def test_guidance_one_is_the_conditional_model():
    x, t, y, cond, cond_image = setup()
    model = FakeModel()
    out = guided_denoiser(model, guidance=1.0, y=y, null_class=NULL, cond=cond, cond_image=cond_image,
                          noise_level=0.25)(x, t)
    assert torch.equal(out, FakeModel()(x, t, y=y, cond=cond, cond_image=cond_image, noise_level=0.25))
    assert model.batches == [3]


@pytest.mark.parametrize("use_y,use_cond", [(True, True), (True, False), (False, True)])
def test_guidance_three_combines_both_branches_in_one_call(use_y, use_cond):
    x, t, y, cond, cond_image = setup()
    y = y if use_y else None
    cond = cond if use_cond else None
    model = FakeModel()
    out = guided_denoiser(model, guidance=3.0, y=y, null_class=NULL, cond=cond, cond_image=cond_image,
                          noise_level=0.25)(x, t)
    ref = FakeModel()
    c = ref(x, t, y=y, cond=cond, cond_image=cond_image, noise_level=0.25)
    u = ref(x, t, y=None if y is None else torch.full_like(y, NULL),
            cond=None if cond is None else torch.zeros_like(cond), cond_image=cond_image, noise_level=0.25)
    assert not torch.allclose(c, u)
    assert torch.allclose(out, u + 3.0 * (c - u), atol=1e-5)
    assert model.batches == [6]  # one batched call over both branches


def test_nothing_to_guide_calls_the_model_once():
    x, t, _, _, _ = setup()
    model = FakeModel()
    out = guided_denoiser(model, guidance=5.0)(x, t)
    assert torch.equal(out, FakeModel()(x, t))
    assert model.batches == [3]


def test_guidance_on_labels_needs_a_null_class():
    _, _, y, _, _ = setup()
    with pytest.raises(ValueError, match="null_class"):
        guided_denoiser(FakeModel(), guidance=2.0, y=y)
    guided_denoiser(FakeModel(), guidance=1.0, y=y)  # nothing to replace: fine


def test_guided_sampling_end_to_end():
    sch = NoiseSchedule("cosine", 100)
    model = FakeModel()
    y = torch.tensor([1, 3])

    def small(x, t, y=None, cond=None):
        return 0.1 * model(x, t, y=y, cond=cond)

    out = sample(guided_denoiser(small, guidance=2.0, y=y, null_class=NULL), (2, 1, 5), sch, steps=4,
                 generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 5) and torch.isfinite(out).all()
    assert model.batches == [4] * 4
    assert math.isfinite(out.sum().item())
