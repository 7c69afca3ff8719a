"""Dual activations: closed forms against quadrature and Monte Carlo, safe gradients, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from scenarios import z_critical

from priors.dual_activations import ArcCosine, Erf, Quadrature, arccos_j, as_dual, gaussian_expectation

#: Agreement required between a closed form and the quadrature rule (float64).
CLOSED_FORM_TOL = 1e-6


def _grid(tkwargs: dict, max_variance: float = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Variances in [0.05, max_variance] and correlations spanning [-1, 1] including both ends."""
    k11 = torch.linspace(0.05, max_variance, 6, **tkwargs)[:, None]
    k22 = torch.linspace(max_variance, 0.1, 7, **tkwargs)[None, :]
    rho = torch.linspace(-1.0, 1.0, 42, **tkwargs)[:42].reshape(6, 7)
    return rho * (k11 * k22).sqrt(), k11, k22


@pytest.mark.parametrize(
    ("closed", "fn"),
    [
        (ArcCosine(0.0), torch.relu),
        (ArcCosine(0.2), lambda x: torch.nn.functional.leaky_relu(x, 0.2)),
        (ArcCosine(-1.0), torch.abs),
        (Erf(), torch.erf),
    ],
    ids=["relu", "leaky_relu", "abs", "erf"],
)
def test_closed_forms_match_quadrature(closed, fn, tkwargs):
    k12, k11, k22 = _grid(tkwargs)
    quad = Quadrature(fn)
    for deriv_index in (0, 1):
        exact = closed.cross(k12, k11, k22, deriv=True)[deriv_index]
        approx = quad.cross(k12, k11, k22, deriv=True)[deriv_index]
        assert (exact - approx).abs().max() < CLOSED_FORM_TOL
    k = torch.linspace(0.0, 2.0, 9, **tkwargs)
    for deriv_index in (0, 1):
        assert (closed.diag(k, deriv=True)[deriv_index] - quad.diag(k, deriv=True)[deriv_index]).abs().max() < (
            CLOSED_FORM_TOL
        )


def test_quadrature_matches_monte_carlo_for_tanh(tkwargs):
    # 4 entries x 2 maps, Bonferroni z-test at family-wise false-failure rate 1e-3.
    torch.manual_seed(1)
    num = 200_000
    k11, k22 = torch.tensor([0.7, 1.5], **tkwargs), torch.tensor([1.2, 0.4], **tkwargs)
    rho = torch.tensor([0.9, -0.3], **tkwargs)
    z1, z2 = torch.randn(2, num, 2, **tkwargs)
    u = k11.sqrt() * z1
    v = k22.sqrt() * (rho * z1 + (1 - rho**2).sqrt() * z2)
    dual = as_dual("tanh")
    value, deriv = dual.cross(rho * (k11 * k22).sqrt(), k11, k22, deriv=True)
    zc = z_critical(4)
    for mc, target in (
        (torch.tanh(u) * torch.tanh(v), value),
        ((1 - torch.tanh(u) ** 2) * (1 - torch.tanh(v) ** 2), deriv),
    ):
        se = mc.std(0) / math.sqrt(num)
        assert ((mc.mean(0) - target).abs() / se).max() < zc


def test_arccos_j_gradient_is_finite_at_plus_minus_one(tkwargs):
    rho = torch.tensor([-1.0, -0.3, 0.0, 0.5, 1.0], **tkwargs, requires_grad=True)
    arccos_j(rho).sum().backward()
    assert torch.allclose(rho.grad, math.pi - torch.arccos(rho.detach()))
    assert rho.grad[0] == 0.0 and rho.grad[-1] == pytest.approx(math.pi)
    assert torch.autograd.gradcheck(arccos_j, (torch.tensor([-0.7, 0.2, 0.9], **tkwargs, requires_grad=True),))


@pytest.mark.parametrize("activation", ["relu", "abs", "erf", "tanh"])
def test_gradients_finite_at_zero_variance_and_full_correlation(activation, tkwargs):
    dual = as_dual(activation)
    k11 = torch.tensor([[0.0], [1.3]], **tkwargs, requires_grad=True)
    k22 = torch.tensor([[0.0, 1.3]], **tkwargs, requires_grad=True)
    k12 = torch.tensor([[0.0, 0.0], [0.0, 1.3]], **tkwargs, requires_grad=True)  # zero inputs and ρ = 1
    value, deriv = dual.cross(k12, k11, k22, deriv=True)
    (value.sum() + deriv.sum()).backward()
    for t in (k11, k22, k12):
        assert torch.isfinite(t.grad).all()
    assert torch.isfinite(value).all()
    assert float(value.detach()[0, 0]) == pytest.approx(float(dual.diag(k11.detach()[0])[0][0]), abs=1e-12)


def test_gaussian_expectation_exact_moments(tkwargs):
    k = torch.tensor([0.0, 0.3, 2.0], **tkwargs)
    assert torch.allclose(gaussian_expectation(lambda x: torch.relu(x) ** 4, k), 1.5 * k**2)
    assert torch.allclose(gaussian_expectation(lambda x: x**2, k), k)
    assert torch.allclose(gaussian_expectation(torch.cos, k), torch.exp(-k / 2))


def test_as_dual_resolves_and_rejects():
    assert isinstance(as_dual("relu"), ArcCosine) and as_dual("abs").negative_slope == -1.0
    assert as_dual("leaky_relu", negative_slope=0.1).negative_slope == 0.1
    assert isinstance(as_dual(torch.sin), Quadrature)
    with pytest.raises(ValueError, match="activation must be one of"):
        as_dual("swishy")
    with pytest.raises(TypeError, match="activation must be a name"):
        as_dual(3)
    with pytest.raises(ValueError, match="num_radial"):
        Quadrature(torch.tanh, num_radial=0)
    with pytest.raises(ValueError, match="negative_slope"):
        ArcCosine(float("nan"))
