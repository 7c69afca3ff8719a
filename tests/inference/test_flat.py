"""Flat views and the batched potentials (vmapped, and batched-matmul for MLPs) used by many-chain engines."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from bayesnets import BayesianNet, Gaussian
from inference.flat import FlatView, batched_potential, mlp_potential
from priors import HierarchicalGaussian, LayerwiseGaussian


def test_ravel_unravel_round_trip(tkwargs):
    view = FlatView({"a": torch.Size([2, 3]), "b": torch.Size([]), "c": torch.Size([4])})
    assert view.size == 11
    params = {"a": torch.randn(5, 2, 3, **tkwargs), "b": torch.randn(5, **tkwargs), "c": torch.randn(5, 4, **tkwargs)}
    flat = view.ravel(params)
    assert flat.shape == (5, 11)
    back = view.unravel(flat)
    assert all(torch.equal(back[k], params[k]) for k in params)
    with pytest.raises(ValueError, match="last dimension 11"):
        view.unravel(torch.zeros(5, 10))
    with pytest.raises(ValueError, match="lacks site"):
        view.ravel({"a": params["a"]})


def test_batched_potential_matches_per_chain_autograd(tkwargs):
    net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).to(**tkwargs)
    model = BayesianNet(net, HierarchicalGaussian(), Gaussian(scale=dist.HalfNormal(1.0)))
    x, y = torch.randn(9, 2, **tkwargs), torch.randn(9, **tkwargs)
    view, fn = batched_potential(model, x, y)
    z = torch.stack([view.ravel(model.init_params(x)) for _ in range(4)])
    grad, value = fn(z)
    assert grad.shape == (4, view.size) and value.shape == (4,)
    for c in range(4):
        zc = z[c].clone().requires_grad_(True)
        lp = model.log_density(view.unravel(zc), x, y)
        (g,) = torch.autograd.grad(lp, zc)
        torch.testing.assert_close(value[c], lp.detach())
        torch.testing.assert_close(grad[c], g)


@pytest.mark.parametrize("case", ["hierarchical, latent noise, minibatch", "layerwise, two outputs, no bias"])
def test_mlp_potential_equals_the_models_log_density(tkwargs, case):
    # Row by row against BayesianNet.log_density and its autograd gradient, in float64.
    if case.startswith("hierarchical"):
        net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1))
        model = BayesianNet(net.to(**tkwargs), HierarchicalGaussian(), Gaussian(scale=dist.HalfNormal(1.0)))
        y_shape, num_data = (11,), 40
    else:
        net = nn.Sequential(nn.Linear(3, 6, bias=False), nn.SiLU(), nn.Linear(6, 2))
        model = BayesianNet(net.to(**tkwargs), LayerwiseGaussian(1.3), Gaussian(scale=0.3, num_outputs=2))
        y_shape, num_data = (11, 2), None
    x, y = model.check_data(torch.randn(11, 3, **tkwargs), torch.randn(*y_shape, **tkwargs))
    view, fn = mlp_potential(model, x, y, num_data=num_data)
    z = torch.stack([view.ravel(model.init_params(x)) for _ in range(4)])
    grad, value = fn(z)
    assert grad.shape == (4, view.size) and value.shape == (4,)
    for c in range(4):
        zc = z[c].clone().requires_grad_(True)
        lp = model.log_density(view.unravel(zc), x, y, num_data=num_data)
        (g,) = torch.autograd.grad(lp, zc)
        torch.testing.assert_close(value[c], lp.detach(), rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(grad[c], g, rtol=1e-12, atol=1e-10)


def test_mlp_potential_is_none_for_other_networks(tkwargs):
    x, y = torch.randn(5, 2, **tkwargs), torch.randn(5, **tkwargs)
    dropout = nn.Sequential(nn.Linear(2, 4), nn.Dropout(), nn.Linear(4, 1))
    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 4), nn.Tanh()), nn.Linear(4, 1))
    for net in (dropout, nested, nn.Linear(2, 1)):
        model = BayesianNet(net.to(**tkwargs), LayerwiseGaussian(1.0), Gaussian(0.1))
        assert mlp_potential(model, x, y) is None
    assert mlp_potential(object(), x, y) is None
