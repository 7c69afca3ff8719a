"""Flat views and the batched potential used by many-chain engines."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from bayesnets import BayesianNet, Gaussian
from inference.flat import FlatView, batched_potential
from priors import HierarchicalGaussian


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
