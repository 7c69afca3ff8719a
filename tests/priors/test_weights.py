"""Weight priors: scales, hierarchical structure, differentiable sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from priors import HierarchicalGaussian, IIDGaussian, LayerwiseGaussian
from priors.weights import fan_in


def _shapes(net: nn.Module) -> dict:
    return {n: p.shape for n, p in net.named_parameters()}


def test_fan_in():
    assert fan_in(torch.Size([4, 3, 5, 5])) == 75
    assert fan_in(torch.Size([7])) == 1


def test_layerwise_scales(tkwargs):
    net = nn.Sequential(nn.Linear(16, 4), nn.Conv1d(4, 2, 3))
    prior = LayerwiseGaussian(scale=2.0, bias_scale=0.5)
    prior.bind(_shapes(net))
    s = prior.scales()
    assert math.isclose(float(s["0.weight"]), 2.0 / 4.0, rel_tol=1e-6)
    assert math.isclose(float(s["1.weight"]), 2.0 / math.sqrt(12), rel_tol=1e-6)
    assert math.isclose(float(s["0.bias"]), 0.5, rel_tol=1e-6)
    draws = prior.sample(torch.zeros((), **tkwargs), (4000,))
    assert draws["0.weight"].shape == (4000, 4, 16)
    # sd of 64,000 N(0, 0.25) draws: relative error ~ 0.3%; 3% is > 10 standard errors.
    assert abs(float(draws["0.weight"].std()) / 0.5 - 1) < 0.03


def test_iid_log_prob_matches_closed_form(tkwargs):
    prior = IIDGaussian(0.7)
    prior.bind({"w": torch.Size([3, 2])})
    w = torch.randn(3, 2, **tkwargs)
    expected = torch.distributions.Normal(0.0, 0.7).log_prob(w).sum()
    torch.testing.assert_close(prior.log_prob({"w": w}), expected)


def test_hierarchical_sites_and_batched_log_prob(tkwargs):
    prior = HierarchicalGaussian(2.0, 3.0, fan_in=False)
    prior.bind({"a.weight": torch.Size([3, 2]), "a.bias": torch.Size([3])})
    like = torch.zeros((), **tkwargs)
    assert list(prior.hyper_sites(like)) == ["precision.a.weight", "precision.a.bias"]
    draws = prior.sample(like, (5,))
    assert draws["precision.a.weight"].shape == (5,) and draws["a.weight"].shape == (5, 3, 2)
    lp = prior.log_prob(draws)
    assert lp.shape == (5,)
    i = 2
    g = torch.distributions.Gamma(torch.tensor(2.0, **tkwargs), torch.tensor(3.0, **tkwargs))
    expect = 0.0
    for name in ("a.weight", "a.bias"):
        prec = draws[f"precision.{name}"][i]
        normal = torch.distributions.Normal(0.0, prec.rsqrt())
        expect = expect + g.log_prob(prec) + normal.log_prob(draws[name][i]).sum()
    torch.testing.assert_close(lp[i], expect)


def test_sampling_is_differentiable_in_hyperparameters(tkwargs):
    prior = LayerwiseGaussian().to(**tkwargs)
    prior.bind({"w": torch.Size([10, 10])})
    prior.requires_grad_(True)
    draws = prior.sample(torch.zeros((), **tkwargs), (8,))
    draws["w"].pow(2).mean().backward()
    assert prior.log_scales.grad is not None and torch.isfinite(prior.log_scales.grad).all()


def test_output_scale_sets_the_read_out_layer_and_bounds_the_amplitude(tkwargs):
    net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 50), nn.Tanh(), nn.Linear(50, 1)).to(**tkwargs)
    prior = LayerwiseGaussian(scale=4.0, bias_scale=0.5, output_scale=1.0)
    prior.bind(_shapes(net))
    s = prior.scales()
    assert math.isclose(float(s["0.weight"]), 4.0 / math.sqrt(2), rel_tol=1e-6)
    assert math.isclose(float(s["2.weight"]), 4.0 / math.sqrt(50), rel_tol=1e-6)
    assert math.isclose(float(s["4.weight"]), 1.0 / math.sqrt(50), rel_tol=1e-6)
    assert math.isclose(float(s["4.bias"]), 0.5, rel_tol=1e-6)
    # tanh units are bounded, so Var f(x) <= output_scale² + bias_scale² = 1.25 at every x, however
    # large the hidden scale. At the corner x = (3, 3), 2000 prior functions: the sample variance's
    # relative standard error is ~ sqrt(2 / 2000) = 3 %, so 1.25 * 1.15 is > 4 standard errors away.
    draws = prior.sample(torch.zeros((), **tkwargs), (2000,))
    x = torch.full((1, 2), 3.0, **tkwargs)
    f = torch.stack([torch.func.functional_call(net, {k: v[i] for k, v in draws.items()}, (x,)) for i in range(2000)])
    assert float(f.var()) < 1.25 * 1.15
    assert LayerwiseGaussian(scale=3.0).init_output_scale == 3.0  # default: the hidden layers' scale
    with pytest.raises(ValueError, match="output_scale"):
        LayerwiseGaussian(output_scale=0.0)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="scale"):
        IIDGaussian(0.0)
    with pytest.raises(ValueError, match="rate"):
        HierarchicalGaussian(1.0, -2.0)
    with pytest.raises(RuntimeError, match="not bound"):
        _ = LayerwiseGaussian().shapes
