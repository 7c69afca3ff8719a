"""Empirical NTK: both methods agree, wide nets approach the analytic NTK, linearised training is kernel regression."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from priors.empirical_ntk import empirical_ntk, linearize, ntk_regression
from priors.kernels import NTKKernel


class NTKParamMLP(nn.Module):
    """MLP in the NTK parametrisation: ``h = σ_w W h / sqrt(fan_in) + σ_b b`` with ``W, b ~ N(0, 1)``."""

    def __init__(self, d: int, width: int, depth: int, weight_variance: float, bias_variance: float, **tkwargs):
        super().__init__()
        dims = [d] + [width] * depth + [1]
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(o, i, **tkwargs)) for i, o in itertools.pairwise(dims))
        self.biases = nn.ParameterList(nn.Parameter(torch.randn(o, **tkwargs)) for o in dims[1:])
        self.sw, self.sb = math.sqrt(weight_variance), math.sqrt(bias_variance)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = self.sw * h @ w.mT / math.sqrt(w.shape[1]) + self.sb * b
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        return h


def test_jacobian_and_ntk_vector_products_agree(tkwargs):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).to(**tkwargs)
    x1, x2 = torch.randn(5, 3, **tkwargs), torch.randn(4, 3, **tkwargs)
    full_j = empirical_ntk(net, x1, x2, method="jacobian")
    full_v = empirical_ntk(net, x1, x2, method="ntk_vp", chunk_size=3)
    assert full_j.shape == (5, 4, 2, 2)
    assert torch.allclose(full_j, full_v, atol=1e-12)
    assert torch.allclose(empirical_ntk(net, x1, x2, trace_outputs=True), full_j.diagonal(dim1=-2, dim2=-1).sum(-1))
    # by hand: Θ = J1 J2ᵀ for output 0
    j1 = torch.cat([g.flatten() for g in torch.autograd.grad(net(x1[:1])[0, 0], net.parameters())])
    j2 = torch.cat([g.flatten() for g in torch.autograd.grad(net(x2[:1])[0, 0], net.parameters())])
    assert torch.allclose(full_j[0, 0, 0, 0], j1 @ j2, atol=1e-12)
    gram = empirical_ntk(net, x1, method="ntk_vp")
    assert torch.allclose(gram, gram.permute(1, 0, 3, 2), atol=1e-12)


def test_empirical_ntk_of_wide_networks_approaches_the_analytic_ntk(tkwargs):
    """Relative Frobenius error falls like width^{-1/2}: averaged over 2 nets per width, the error
    at width 1024 is below 0.1 and at least 2x smaller than at width 64 (expected 4x)."""
    torch.manual_seed(1)
    x = torch.randn(8, 3, **tkwargs)
    with torch.no_grad():
        analytic = NTKKernel(depth=2, weight_variance=2.0, bias_variance=0.1).to(**tkwargs)(x).to_dense()
    errors = {}
    for width in (64, 256, 1024):
        errs = []
        for _ in range(2):
            net = NTKParamMLP(3, width, 2, 2.0, 0.1, **tkwargs)
            emp = empirical_ntk(net, x, method="ntk_vp")
            errs.append(float((emp - analytic).norm() / analytic.norm()))
        errors[width] = sum(errs) / len(errs)
    assert errors[1024] < 0.1
    assert errors[64] > 2 * errors[1024]
    assert errors[256] < errors[64]


def test_linearised_gradient_descent_is_ntk_kernel_regression(tkwargs):
    """Full-batch GD on ½Σ(f - y)² of the linearised net equals the closed form exactly."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 1)).to(**tkwargs)
    x, y, x_test = torch.randn(10, 2, **tkwargs), torch.randn(10, **tkwargs), torch.randn(5, 2, **tkwargs)
    f_lin, params0 = linearize(net)
    params = {k: v.clone().requires_grad_(True) for k, v in params0.items()}
    theta = empirical_ntk(net, x)
    lr, steps = 0.5 / float(torch.linalg.eigvalsh(theta).max()), 60
    for _ in range(steps):
        loss = 0.5 * (f_lin(params, x).squeeze(-1) - y).square().sum()
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads):
                p -= lr * g
    with torch.no_grad():
        trained = f_lin(params, x_test).squeeze(-1)
        f0_train, f0_test = net(x).squeeze(-1), net(x_test).squeeze(-1)
    predicted = ntk_regression(
        theta, empirical_ntk(net, x_test, x), y, f0_train=f0_train, f0_test=f0_test, lr=lr, num_steps=steps
    )
    assert torch.allclose(trained, predicted, atol=1e-9)


def test_trained_wide_network_tracks_analytic_ntk_regression(tkwargs):
    """An NTK-parametrised net trained by GD follows kernel regression with the analytic NTK
    (arXiv 1806.07572); the relative gap is O(1/sqrt(width)) (expected 8x smaller at width 1024
    than at 16). Averaged over 4 nets per width; we require < 0.08 and a 2x reduction."""
    torch.manual_seed(3)
    x, x_test = torch.randn(8, 2, **tkwargs), torch.randn(6, 2, **tkwargs)
    y = torch.sin(x.sum(-1))
    kernel = NTKKernel(depth=1, weight_variance=2.0, bias_variance=0.1).to(**tkwargs)
    with torch.no_grad():
        k_train, k_cross = kernel(x).to_dense(), kernel(x_test, x).to_dense()
    lr, steps = 0.5 / float(torch.linalg.eigvalsh(k_train).max()), 200
    gaps = {}
    for width in (16, 1024):
        gap = 0.0
        for _ in range(4):
            net = NTKParamMLP(2, width, 1, 2.0, 0.1, **tkwargs)
            with torch.no_grad():
                f0_train, f0_test = net(x).squeeze(-1), net(x_test).squeeze(-1)
            opt = torch.optim.SGD(net.parameters(), lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                (0.5 * (net(x).squeeze(-1) - y).square().sum()).backward()
                opt.step()
            with torch.no_grad():
                trained = net(x_test).squeeze(-1)
            predicted = ntk_regression(k_train, k_cross, y, f0_train=f0_train, f0_test=f0_test, lr=lr, num_steps=steps)
            gap += float((trained - predicted).norm() / predicted.norm()) / 4
        gaps[width] = gap
    assert gaps[1024] < 0.08
    assert gaps[1024] < gaps[16] / 2


def test_ntk_regression_limits(tkwargs):
    torch.manual_seed(4)
    a = torch.randn(6, 6, **tkwargs)
    k = a @ a.mT + 0.1 * torch.eye(6, **tkwargs)
    kx, y = torch.randn(3, 6, **tkwargs), torch.randn(6, 2, **tkwargs)
    exact = kx @ torch.linalg.solve(k, y)
    assert torch.allclose(ntk_regression(k, kx, y), exact)
    assert torch.allclose(ntk_regression(k, kx, y, time=1e6), exact, atol=1e-8)
    lr = 1.0 / float(torch.linalg.eigvalsh(k).max())
    assert torch.allclose(ntk_regression(k, kx, y, lr=lr, num_steps=100_000), exact, atol=1e-8)
    assert torch.allclose(ntk_regression(k, kx, y, time=0.0), torch.zeros(3, 2, **tkwargs))


def test_bad_input_is_rejected(tkwargs):
    net = nn.Linear(3, 1).to(**tkwargs)
    with pytest.raises(ValueError, match="batch dimension"):
        empirical_ntk(net, torch.randn(3, **tkwargs))
    with pytest.raises(ValueError, match="method"):
        empirical_ntk(net, torch.randn(2, 3, **tkwargs), method="magic")
    with pytest.raises(ValueError, match="input shape"):
        empirical_ntk(net, torch.randn(2, 3, **tkwargs), torch.randn(2, 4, **tkwargs))
    with pytest.raises(ValueError, match="requires_grad"):
        empirical_ntk(net.requires_grad_(False), torch.randn(2, 3, **tkwargs))
    k = torch.eye(3, **tkwargs)
    with pytest.raises(ValueError, match="diverges"):
        ntk_regression(k, k, torch.ones(3, **tkwargs), lr=5.0, num_steps=3)
    with pytest.raises(ValueError, match="together"):
        ntk_regression(k, k, torch.ones(3, **tkwargs), lr=0.1)
    with pytest.raises(ValueError, match="y_train"):
        ntk_regression(k, k, torch.ones(4, **tkwargs))
