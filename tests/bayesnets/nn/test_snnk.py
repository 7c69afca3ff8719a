"""SNNK layers and universal random features (arXiv:2310.13225).

The kernel checks are z-tests: each estimate is a mean of ``m`` i.i.d. terms (i.i.d.
projections, ``orthogonal=False``) whose second moment has a closed-form upper bound, so
``|estimate - truth| <= z * sqrt(bound / m)`` fails with probability at most the stated
family-wise rate (Bonferroni over the entries; ``z_critical``, alpha = 1e-3).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from scenarios import z_critical
from torch import nn

from bayesnets.nn import BundledSNNK, SNNKFeatures, SNNKLinear
from bayesnets.nn.snnk import orthogonal_gaussian
from priors.dual_activations import arccos_j


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit_rows(n: int, d: int, norm: float, **tkwargs) -> torch.Tensor:
    x = torch.randn(n, d, **tkwargs)
    return norm * x / x.norm(dim=1, keepdim=True)


def test_relu_features_estimate_the_arc_cosine_kernel(tkwargs):
    # E[relu(g.x~) relu(g.w~)] = |x~||w~| J(theta) / (2 pi) (order-1 arc-cosine kernel, Cho &
    # Saul), with x~ = [x, 1], w~ = [w, b]. Second moment of one term <= 1.5 |x~|^2 |w~|^2
    # (Cauchy-Schwarz and E[relu(z)^4] = 1.5 for z ~ N(0, 1)).
    m = 40_000
    feat = SNNKFeatures(5, m, "relu", orthogonal=False, generator=_generator()).to(**tkwargs)
    x, w, b = torch.randn(6, 5, **tkwargs), torch.randn(4, 5, **tkwargs), torch.randn(4, **tkwargs)
    est = feat.input_features(x) @ feat.param_features(w, b).T
    xt = torch.cat([x, torch.ones(6, 1, **tkwargs)], 1)
    wt = torch.cat([w, b[:, None]], 1)
    nx, nw = xt.norm(dim=1)[:, None], wt.norm(dim=1)[None, :]
    exact = nx * nw * arccos_j((xt @ wt.T) / (nx * nw)) / (2 * math.pi)
    bound = z_critical(est.numel()) * (1.5 * nx**2 * nw**2 / m).sqrt()
    assert est.shape == (6, 4)
    assert bool(((est - exact).abs() <= bound).all()), ((est - exact) / bound).abs().max()


def test_orthogonal_projections_are_orthogonal_in_blocks_with_gaussian_norms():
    g = orthogonal_gaussian(20, 8, _generator(), dtype=torch.float64)
    assert g.shape == (20, 8)
    for block in (g[:8], g[8:16]):
        gram = block @ block.T
        torch.testing.assert_close(gram - torch.diag(gram.diagonal()), torch.zeros(8, 8, dtype=torch.float64),
                                   rtol=0, atol=1e-12)
    norms = g.norm(dim=1)
    assert float(norms.std()) > 0.1  # chi-distributed row norms, not all 1 (or all sqrt(d))


@pytest.mark.parametrize("kind", ["cos", "sin"])
def test_urf_layer_approximates_the_activation_of_the_linear_layer(kind, tkwargs):
    # URF: Re(Phi(x) . Psi(w, b)) is unbiased for f(w.x + b); one term's second moment is
    # <= exp(|x|^2) E[exp(2 g.w - |w|^2)] = exp(|x|^2 + |w|^2).
    m = 20_000
    torch.manual_seed(1)
    linear = nn.Linear(6, 5).to(**tkwargs)
    with torch.no_grad():
        linear.weight.copy_(_unit_rows(5, 6, 0.5, **tkwargs))
        linear.bias.normal_()
    x = _unit_rows(7, 6, 0.5, **tkwargs)
    layer = SNNKLinear.from_linear(linear, kind, m, orthogonal=False, generator=_generator(2))
    assert layer.weight.shape == (5, 2 * m)
    truth = getattr(torch, kind)(linear(x))
    est = layer(x)
    bound = z_critical(est.numel()) * math.sqrt(math.exp(0.25 + 0.25) / m)
    assert bool(((est - truth).abs() <= bound).all()), ((est - truth).abs() / bound).max()


def test_urf_with_a_continuous_spectrum_approximates_a_gaussian_activation(tkwargs):
    # exp(-z^2/2) = E_{omega ~ N(0,1)}[exp(i omega z)]: spectrum omega ~ N(0, 1), weights c = 1.
    # Second moment of one term <= E[exp(omega^2 |x|^2)] exp(|w|^2) = exp(|w|^2) / sqrt(1 - 2|x|^2).
    m = 20_000
    omega = torch.randn(m, generator=_generator(3), dtype=torch.float64)
    feat = SNNKFeatures(4, m, "urf", orthogonal=False, spectrum=(omega, torch.ones(m, dtype=torch.complex128)),
                        generator=_generator(4)).to(**tkwargs)
    x, w, b = _unit_rows(5, 4, 0.5, **tkwargs), _unit_rows(3, 4, 0.5, **tkwargs), torch.randn(3, **tkwargs)
    est = feat.input_features(x) @ feat.param_features(w, b).T
    truth = torch.exp(-0.5 * (x @ w.T + b) ** 2)
    bound = z_critical(est.numel()) * math.sqrt(math.exp(0.25) / math.sqrt(1 - 2 * 0.25) / m)
    assert bool(((est - truth).abs() <= bound).all()), ((est - truth).abs() / bound).max()


def test_bundling_chains_the_features_and_absorbs_the_output_layer(tkwargs):
    # Conditional on stage 1, the bundled stage 2 is an unbiased URF estimate of
    # cos((W2 M1) Phi1(x) + b2), M1 = Psi1(W1, b1), with second moment per term
    # <= exp(|Phi1(x)|^2 + |row of W2 M1|^2) (the cos bound above with Phi1(x) as input).
    torch.manual_seed(5)
    l1, l2, out = nn.Linear(3, 6), nn.Linear(6, 4), nn.Linear(4, 2)
    for lin in (l1, l2, out):
        lin.to(**tkwargs)
    with torch.no_grad():
        l1.weight.copy_(_unit_rows(6, 3, 0.5, **tkwargs))
        l2.weight.mul_(0.5)
    x = _unit_rows(8, 3, 0.5, **tkwargs)
    m1, m2 = 300, 6000
    net = BundledSNNK.from_mlp([l1, l2], "cos", [m1, m2], orthogonal=False, generator=_generator(6))
    stage1, stage2 = net.stages
    assert (stage1.in_features, stage1.out_dim, stage2.in_features, stage2.out_dim) == (3, 2 * m1, 2 * m1, 2 * m2)
    assert [n for n, _ in net.named_parameters()] == ["weight", "bias"]
    phi1 = stage1.input_features(x)
    w_eff = l2.weight @ stage1.param_features(l1.weight, l1.bias)
    truth = torch.cos(phi1 @ w_eff.T + l2.bias)
    est = net(x)
    second = torch.exp(phi1.pow(2).sum(1)[:, None] + w_eff.pow(2).sum(1)[None, :])
    bound = z_critical(est.numel()) * (second / m2).sqrt()
    assert bool(((est - truth).abs() <= bound).all()), ((est - truth).abs() / bound).max()
    # An output layer without activation is folded into the trainable map exactly.
    with_out = BundledSNNK.from_mlp([l1, l2], "cos", [m1, m2], output=out, orthogonal=False, generator=_generator(6))
    torch.testing.assert_close(with_out(x), out(est), rtol=1e-10, atol=1e-10)


def test_fully_bundled_network_fits_mse_in_closed_form(tkwargs):
    g = _generator(7)
    x = torch.rand(300, 2, generator=g, dtype=torch.float64).to(**tkwargs) * 2 - 1
    x_test = torch.rand(200, 2, generator=g, dtype=torch.float64).to(**tkwargs) * 2 - 1

    def f(t):
        return torch.sin(3 * t[:, 0]) * t[:, 1] + 0.5 * t[:, 1] ** 2

    torch.manual_seed(8)
    net = BundledSNNK.from_mlp([nn.Linear(2, 16), nn.Linear(16, 16)], "relu", 64, output=nn.Linear(16, 1),
                               generator=g).to(**tkwargs)
    with torch.no_grad():
        before = float((net(x_test).squeeze(-1) - f(x_test)).pow(2).mean())
    net.fit_mse(x, f(x), lam=1e-8)
    net.requires_grad_(False)
    # The optimum: the least-squares normal equations hold (gradient of the MSE is zero).
    phi = net.features(x)
    resid = phi @ net.weight[0] + net.bias[0] - f(x)
    grad = torch.cat([phi.T @ resid + 1e-8 * net.weight[0], resid.sum()[None]])
    assert float(grad.abs().max()) < 1e-8 * float(phi.abs().sum())
    after = float((net(x_test).squeeze(-1) - f(x_test)).pow(2).mean())
    # And it generalises: held-out MSE below 1% of the target variance (observed 0.2%).
    assert after < 0.01 * float(f(x_test).var()) < before


def test_snnk_errors_name_the_problem(tkwargs):
    with pytest.raises(ValueError, match="kind must be one of"):
        SNNKFeatures(3, 8, "tanh")
    with pytest.raises(ValueError, match="kind='urf' needs spectrum"):
        SNNKFeatures(3, 8, "urf")
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 3\]"):
        SNNKLinear(3, 2, 8).to(**tkwargs)(torch.zeros(4, 5, **tkwargs))
    with pytest.raises(TypeError, match=r"linear must be a torch\.nn\.Linear"):
        SNNKLinear.from_linear(nn.Conv1d(1, 1, 1))
    with pytest.raises(ValueError, match=r"linears\[1\] takes 5 inputs"):
        BundledSNNK.from_mlp([nn.Linear(2, 4), nn.Linear(5, 1)], "relu", 8)


def test_in_bayesian_net_with_svi(fit_small_regression):
    # The random projections are buffers: fixed, and no prior site.
    net = nn.Sequential(SNNKLinear(2, 16, 32, "relu", generator=_generator(9)), nn.Linear(16, 1))
    proj = net[0].features.projection.clone()
    _, post, x, _ = fit_small_regression(net)
    assert set(post.samples) == {"0.weight", "1.weight", "1.bias"}
    assert torch.equal(net[0].features.projection, proj.to(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = post.predict(x)
    assert pred.f.shape == (1, 16, 48, 1) and torch.isfinite(pred.f).all()
