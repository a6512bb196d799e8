"""The diffusion U-Net (DDPM / ADM): shapes, conditioning, zero init, config, training, tracing."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from unetkit.models.diffusion import (
    DiffusionUNet,
    DiffusionUNetConfig,
    group_count,
    head_count,
    timestep_embedding,
)


@pytest.fixture(autouse=True)
def _seeded(one_thread):
    torch.manual_seed(0)


def tiny(**kwargs) -> DiffusionUNetConfig:
    values = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,),
                  attention_head_channels=8, groups=4)
    values.update(kwargs)
    return DiffusionUNetConfig(**values)


def perturb(model: nn.Module, std: float = 0.1) -> nn.Module:
    """Add noise to every parameter, so that the zero-initialised layers stop hiding the rest."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def test_timestep_embedding():
    t = torch.tensor([0.0, 1.0, 2.5, 999.0])
    emb = timestep_embedding(t, 16)
    assert emb.shape == (4, 16) and emb.dtype == torch.float32
    assert torch.equal(emb[0, :8], torch.ones(8)) and torch.equal(emb[0, 8:], torch.zeros(8))
    # the first frequency is 1: cos(t), sin(t)
    assert torch.allclose(emb[:, 0], torch.cos(t)) and torch.allclose(emb[:, 8], torch.sin(t))
    assert torch.allclose(timestep_embedding(t.long(), 16)[[0, 1, 3]], emb[[0, 1, 3]])
    odd = timestep_embedding(t, 7)
    assert odd.shape == (4, 7) and torch.equal(odd[:, -1], torch.zeros(4))


def test_group_and_head_counts():
    assert group_count(64, 32) == 32 and group_count(24, 32) == 24 and group_count(12, 8) == 6
    assert head_count(64, 32) == 2 and head_count(16, 32) == 1 and head_count(100, 30) == 2


@pytest.mark.parametrize(
    "dims,spatial,mults",
    [(2, (8, 16), (1, 2)), (2, (12, 4), (1, 2, 2)), (3, (4, 8, 4), (1, 2))],
)
def test_output_shapes(dims, spatial, mults):
    model = DiffusionUNet(tiny(dims=dims, channel_mults=mults, in_channels=2, out_channels=3,
                               attention_levels=(0, len(mults) - 1)))
    assert model.size_multiple == 2 ** (len(mults) - 1)
    x = torch.randn(2, 2, *spatial)
    out = model(x, torch.tensor([3, 700]))
    assert out.shape == (2, 3, *spatial)
    assert perturb(model)(x, torch.tensor([0.5, 10.0])).shape == (2, 3, *spatial)


def test_all_conditioning_inputs():
    cfg = tiny(in_channels=1, out_channels=1, num_classes=3, cond_dim=5, cond_channels=2,
               noise_level_input=True)
    model = perturb(DiffusionUNet(cfg)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1.0, 50.0])
    y, cond, image = torch.tensor([0, 3]), torch.randn(2, 5), torch.randn(2, 2, 8, 8)
    level = torch.tensor([0.0, 0.3])
    out = model(x, t, y=y, cond=cond, cond_image=image, noise_level=level)
    assert out.shape == (2, 1, 8, 8)
    # each input matters ...
    for changed in (
        dict(y=torch.tensor([1, 2])), dict(cond=cond + 1), dict(cond_image=image + 1),
        dict(noise_level=torch.tensor([0.5, 0.9])),
    ):
        kwargs = dict(y=y, cond=cond, cond_image=image, noise_level=level) | changed
        assert not torch.allclose(model(x, t, **kwargs), out)
    # ... and None means zeros for the vector and the noise level
    zeros = model(x, t, y=y, cond=torch.zeros(2, 5), cond_image=image, noise_level=torch.zeros(2))
    assert torch.equal(model(x, t, y=y, cond_image=image), zeros)


def test_errors():
    model = DiffusionUNet(tiny(cond_channels=2))
    x, t = torch.randn(1, 1, 8, 8), torch.zeros(1)
    with pytest.raises(ValueError, match="cond_image"):
        model(x, t)
    with pytest.raises(ValueError, match="multiple of 2"):
        model(torch.randn(1, 1, 8, 7), t, cond_image=torch.randn(1, 2, 8, 7))
    with pytest.raises(ValueError, match="multiple of 4"):
        DiffusionUNet(tiny(channel_mults=(1, 1, 2)))(torch.randn(1, 1, 8, 10), t)
    with pytest.raises(ValueError, match="num_classes=0"):
        model(x, t, y=torch.zeros(1, dtype=torch.long), cond_image=torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(1, 3, 8, 8), t, cond_image=torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="attention_levels"):
        DiffusionUNet(tiny(attention_levels=(2,)))


def test_no_class_is_the_last_index():
    model = perturb(DiffusionUNet(tiny(num_classes=4))).eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 5, 999])
    out = model(x, t)
    assert torch.equal(out, model(x, t, y=torch.full((3,), 4, dtype=torch.long)))
    assert not torch.allclose(out, model(x, t, y=torch.tensor([0, 1, 2])))


def test_zero_init_output():
    model = DiffusionUNet(tiny(num_classes=2, cond_dim=3, noise_level_input=True, dims=3))
    out = model(torch.randn(2, 1, 4, 4, 4), torch.tensor([1, 2]), y=torch.tensor([0, 1]),
                cond=torch.randn(2, 3), noise_level=torch.rand(2))
    assert torch.equal(out, torch.zeros_like(out))


def test_class_embedding_changes_output():
    model = DiffusionUNet(tiny(num_classes=3)).eval()
    x, t = torch.randn(1, 1, 8, 8), torch.tensor([10])
    outs = [model(x, t, y=torch.tensor([c])) for c in range(3)]
    assert all(torch.equal(o, outs[0]) for o in outs)  # zero init: nothing yet
    perturb(model)
    outs = [model(x, t, y=torch.tensor([c])) for c in range(3)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


def test_config_round_trip():
    cfg = tiny(num_classes=10, cond_dim=4, cond_channels=1, noise_level_input=True, dims=3,
               channel_mults=(1, 2, 4), attention_levels=(1, 2), dropout=0.1)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["architecture"] == "diffusion_unet" and data["channel_mults"] == [1, 2, 4]
    back = DiffusionUNetConfig.from_dict(data)
    assert back == cfg and isinstance(back.channel_mults, tuple)
    assert DiffusionUNet(back).config.to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match="known fields"):
        DiffusionUNetConfig.from_dict(data | {"depth": 3})


def test_trains():
    model = DiffusionUNet(tiny(num_classes=2))
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 100, 999]), torch.tensor([0, 1, 2, 1])
    target = torch.randn(4, 1, 8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = nn.functional.mse_loss(model(x, t, y=y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert all(p.grad is not None for p in model.parameters())


class _Wrapper(nn.Module):
    def __init__(self, model: DiffusionUNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, y=y)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("dims", [2, 3])
def test_jit_trace_matches_eager(dims):
    spatial = (8, 8) if dims == 2 else (4, 4, 4)
    model = perturb(DiffusionUNet(tiny(num_classes=3, dims=dims))).eval()
    wrapper = _Wrapper(model)
    x, t, y = torch.randn(2, 1, *spatial), torch.tensor([3.0, 400.0]), torch.tensor([0, 3])
    traced = torch.jit.trace(wrapper, (x, t, y))
    x2, t2, y2 = torch.randn(2, 1, *spatial), torch.tensor([7.0, 1.5]), torch.tensor([2, 1])
    with torch.no_grad():
        assert torch.allclose(traced(x2, t2, y2), wrapper(x2, t2, y2), atol=1e-5)
