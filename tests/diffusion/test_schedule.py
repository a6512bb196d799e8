"""Noise schedules: the tables against closed forms computed independently, the forward process,
eps / v targets and their inverse, the posterior, respacing and the sampling time steps."""

import math

import pytest
import torch

from unetkit.diffusion import PREDICTIONS, SCHEDULES, NoiseSchedule, sampling_timesteps


def cosine_f(u: float, total: int, s: float = 0.008) -> float:
    return math.cos((u / total + s) / (1 + s) * math.pi / 2) ** 2


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("steps", [1000, 37])
def test_tables_are_consistent(kind, steps):
    sch = NoiseSchedule(kind, steps)
    assert sch.kind == kind and sch.steps == steps
    for name in ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                 "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"):
        table = getattr(sch, name)
        assert table.shape == (steps,) and table.dtype == torch.float64 and table.device.type == "cpu"
        assert torch.isfinite(table).all(), name
    assert torch.equal(sch.timestep_map, torch.arange(steps))
    assert ((sch.betas > 0) & (sch.betas <= 0.999)).all()
    # Cumulative product, written out as a loop.
    prod, expected = 1.0, []
    for beta in sch.betas.tolist():
        prod *= 1.0 - beta
        expected.append(prod)
    assert torch.allclose(sch.alphas_cumprod, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    assert sch.alphas_cumprod_prev[0] == 1.0
    assert torch.equal(sch.alphas_cumprod_prev[1:], sch.alphas_cumprod[:-1])
    assert (sch.alphas_cumprod[1:] < sch.alphas_cumprod[:-1]).all()


@pytest.mark.parametrize("kind", SCHEDULES)
def test_posterior_variance_closed_form(kind):
    sch = NoiseSchedule(kind, 200)
    betas = sch.betas.tolist()
    ab, prev, expected = 1.0, 1.0, []
    for beta in betas:
        ab = prev * (1.0 - beta)
        expected.append(beta * (1.0 - prev) / (1.0 - ab))
        prev = ab
    expected = torch.tensor(expected, dtype=torch.float64)
    assert torch.allclose(sch.posterior_variance, expected, rtol=1e-10, atol=0)
    assert sch.posterior_variance[0] == 0
    # The log is clipped at t = 0 to the value at t = 1 (the variance there is 0).
    assert torch.allclose(sch.posterior_log_variance_clipped[1:], expected[1:].log(), rtol=1e-12)
    assert sch.posterior_log_variance_clipped[0] == sch.posterior_log_variance_clipped[1]
    # Between the two classic choices: posterior variance <= beta.
    assert (sch.posterior_variance <= sch.betas).all()


@pytest.mark.parametrize("steps", [1000, 100])
def test_cosine_matches_closed_form_below_the_clip(steps):
    sch = NoiseSchedule("cosine", steps)
    f0 = cosine_f(0, steps)
    closed = torch.tensor([cosine_f(t + 1, steps) / f0 for t in range(steps)], dtype=torch.float64)
    unclipped = sch.betas < 0.999
    # The clip only bites at the very end (f(T) = 0 would give beta = 1).
    assert unclipped[:-1].all() and not unclipped[-1]
    assert sch.betas[-1] == pytest.approx(0.999)
    assert torch.allclose(sch.alphas_cumprod[unclipped], closed[unclipped], rtol=1e-9, atol=1e-15)
    assert sch.alphas_cumprod[-1] > 0


def test_linear_endpoints():
    sch = NoiseSchedule("linear", 1000)
    assert sch.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert sch.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert (sch.betas[1:] > sch.betas[:-1]).all()
    diffs = sch.betas[1:] - sch.betas[:-1]
    assert torch.allclose(diffs, diffs.mean().expand_as(diffs), rtol=1e-6)
    short = NoiseSchedule("linear", 250)  # scaled by 1000 / 250 = 4
    assert short.betas[0].item() == pytest.approx(4e-4, rel=1e-12)
    assert short.betas[-1].item() == pytest.approx(0.08, rel=1e-12)
    # Very short linear schedules would reach beta >= 1: clipped at 0.999 like the cosine ones.
    tiny = NoiseSchedule("linear", 10)
    assert tiny.betas.max() == pytest.approx(0.999) and (tiny.alphas_cumprod > 0).all()
    assert tiny.betas[0].item() == pytest.approx(0.01, rel=1e-12)


def test_default_is_cosine_1000():
    sch = NoiseSchedule()
    assert sch.kind == "cosine" and sch.steps == 1000


@pytest.mark.parametrize("bad", [dict(kind="quadratic"), dict(kind="Linear"), dict(steps=0),
                                 dict(steps=-5), dict(steps=10.0)])
def test_bad_schedule_raises(bad):
    with pytest.raises(ValueError):
        NoiseSchedule(**bad)


def test_q_sample_exact_and_statistics():
    sch = NoiseSchedule("linear", 1000)
    torch.manual_seed(0)
    t = torch.tensor([0, 10, 500, 999])
    x0 = torch.full((4, 2, 64, 64), 0.7)
    noise = torch.randn(4, 2, 64, 64)
    x_t = sch.q_sample(x0, t, noise)
    assert x_t.shape == x0.shape and x_t.dtype == torch.float32
    for i, step in enumerate(t.tolist()):
        ab = sch.alphas_cumprod[step].item()
        expected = math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * noise[i]
        assert torch.allclose(x_t[i], expected, atol=1e-6)
        # Statistics: mean sqrt(ab) x0, standard deviation sqrt(1 - ab).
        assert x_t[i].mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=4 * math.sqrt(1 - ab) / 90)
        assert x_t[i].std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.03)


def test_methods_follow_the_input_device_and_dtype():
    sch = NoiseSchedule("cosine", 50)
    x = torch.randn(3, 1, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 49], dtype=torch.int32)
    assert sch.q_sample(x, t, x).dtype == torch.float64
    assert sch.q_sample(x.float(), t, x.float()).dtype == torch.float32
    with pytest.raises(ValueError):
        sch.q_sample(x, torch.tensor([0, 1]), x)  # t must be (N,)
    with pytest.raises(ValueError):
        sch.q_sample(x, torch.tensor([0.0, 1.0, 2.0]), x)  # integer step indices


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_targets_round_trip(kind, prediction):
    sch = NoiseSchedule(kind, 1000)
    gen = torch.Generator().manual_seed(1)
    t = torch.tensor([0, 1, 250, 500, 900, 999])
    x0 = torch.rand(6, 2, 5, 5, generator=gen, dtype=torch.float64) * 2 - 1
    noise = torch.randn(6, 2, 5, 5, generator=gen, dtype=torch.float64)
    x_t = sch.q_sample(x0, t, noise)
    target = sch.training_target(x0, noise, t, prediction)
    x0_hat, eps_hat = sch.predict_x0_and_eps(x_t, t, target, prediction)
    assert torch.allclose(x0_hat, x0, atol=1e-9, rtol=0)
    assert torch.allclose(eps_hat, noise, atol=1e-9, rtol=0)
    # float32 away from the very noisiest step (where x0 = (x_t - s eps) / sqrt(ab) amplifies rounding).
    t32 = t[:-1]
    x0f, nf = x0[:-1].float(), noise[:-1].float()
    target = sch.training_target(x0f, nf, t32, prediction)
    x0_hat, eps_hat = sch.predict_x0_and_eps(sch.q_sample(x0f, t32, nf), t32, target, prediction)
    assert x0_hat.dtype == torch.float32 and eps_hat.dtype == torch.float32
    assert torch.allclose(x0_hat, x0f, atol=5e-4) and torch.allclose(eps_hat, nf, atol=5e-4)


def test_v_target_formula():
    sch = NoiseSchedule("cosine", 100)
    t = torch.tensor([3, 60])
    x0 = torch.randn(2, 1, 3, dtype=torch.float64)
    noise = torch.randn(2, 1, 3, dtype=torch.float64)
    v = sch.training_target(x0, noise, t, "v")
    for i, step in enumerate(t.tolist()):
        ab = sch.alphas_cumprod[step].item()
        assert torch.allclose(v[i], math.sqrt(ab) * noise[i] - math.sqrt(1 - ab) * x0[i], atol=1e-12)
    assert torch.equal(sch.training_target(x0, noise, t, "eps"), noise)


def test_unknown_prediction_raises():
    sch = NoiseSchedule("linear", 10)
    x = torch.zeros(1, 1, 2)
    t = torch.tensor([3])
    with pytest.raises(ValueError, match="prediction"):
        sch.training_target(x, x, t, "x0")
    with pytest.raises(ValueError, match="prediction"):
        sch.predict_x0_and_eps(x, t, x, "epsilon")


@pytest.mark.parametrize("kind", SCHEDULES)
def test_q_posterior_is_the_bayes_posterior(kind):
    # q(x_{t-1} | x0) = N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}) times
    # q(x_t | x_{t-1}) = N(sqrt(a_t) x_{t-1}, beta_t): the product of the two Gaussians in x_{t-1},
    # worked out from precisions.
    sch = NoiseSchedule(kind, 300)
    t = torch.tensor([1, 2, 50, 150, 299])
    x0 = torch.randn(5, 3, 4, dtype=torch.float64)
    x_t = torch.randn(5, 3, 4, dtype=torch.float64)
    mean, log_var = sch.q_posterior(x0, x_t, t)
    assert mean.shape == x_t.shape and log_var.shape == x_t.shape
    for i, step in enumerate(t.tolist()):
        beta = sch.betas[step].item()
        ab_prev = sch.alphas_cumprod[step - 1].item()
        precision = 1 / (1 - ab_prev) + (1 - beta) / beta
        weighted = math.sqrt(ab_prev) * x0[i] / (1 - ab_prev) + math.sqrt(1 - beta) * x_t[i] / beta
        expected = weighted / precision
        assert torch.allclose(mean[i], expected, atol=1e-10)
        assert torch.allclose(log_var[i], torch.full_like(log_var[i], -math.log(precision)), atol=1e-10)
    # At t = 0 the posterior is a point mass at x0.
    mean0, _ = sch.q_posterior(x0[:1], x_t[:1], torch.tensor([0]))
    assert torch.allclose(mean0, x0[:1], atol=1e-12)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_respacing_keeps_alphas_cumprod(kind):
    sch = NoiseSchedule(kind, 1000)
    chosen = [0, 7, 100, 333, 600, 998, 999]
    sub = sch.respaced(chosen)
    assert sub.steps == len(chosen) and sub.kind == kind
    assert torch.equal(sub.timestep_map, torch.tensor(chosen))
    assert sub.timestep_map.dtype == torch.long
    assert torch.allclose(sub.alphas_cumprod, sch.alphas_cumprod[chosen], rtol=1e-10, atol=0)
    assert torch.allclose(sub.betas, 1 - sch.alphas_cumprod[chosen] / sub.alphas_cumprod_prev, rtol=1e-12)
    # Order and duplicates do not matter.
    again = sch.respaced([999, 0, 7, 7, 100, 333, 600, 998])
    assert torch.equal(again.betas, sub.betas)
    # Respacing a respaced schedule maps back to the original steps.
    twice = sub.respaced([1, 3, 6])
    assert torch.equal(twice.timestep_map, torch.tensor([7, 333, 999]))
    assert torch.allclose(twice.alphas_cumprod, sch.alphas_cumprod[[7, 333, 999]], rtol=1e-10)
    # Keeping every step gives the same schedule.
    full = sch.respaced(range(1000))
    assert torch.allclose(full.betas, sch.betas, rtol=1e-9)
    assert torch.allclose(full.posterior_variance, sch.posterior_variance, rtol=1e-8)


def test_respacing_rejects_bad_steps():
    sch = NoiseSchedule("linear", 100)
    for bad in ([], [0, 100], [-1, 5]):
        with pytest.raises(ValueError):
            sch.respaced(bad)


def test_sampling_timesteps():
    for total, steps in [(1000, 50), (1000, 20), (1000, 999), (10, 3), (7, 7), (2, 2), (1000, 2)]:
        ts = sampling_timesteps(total, steps)
        assert len(ts) == steps and ts[0] == 0 and ts[-1] == total - 1
        assert all(b > a for a, b in zip(ts, ts[1:]))
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        assert max(gaps) - min(gaps) <= 1  # evenly spaced up to rounding
    assert sampling_timesteps(8, 8) == list(range(8))
    assert sampling_timesteps(1000, 1) == [999]
    assert sampling_timesteps(11, 6) == [0, 2, 4, 6, 8, 10]
    for total, steps in [(10, 11), (10, 0), (0, 0), (10, -1)]:
        with pytest.raises(ValueError):
            sampling_timesteps(total, steps)
