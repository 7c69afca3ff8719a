"""Infinite depth (arXiv 2204.14126): dual activations, the deep NTK, and its three limiting classifiers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scenarios import z_critical

from priors.infinite_depth import (
    OPTIMAL_DUALS,
    HermiteActivation,
    NormalisedDual,
    NTKClassifier,
    deep_kernel,
    limit_regime,
)
from priors.kernels import NTKKernel

#: A dual with φ̌(0) = 0.2 > 0: its attracting fixed point ξ* = 0.25 gives majority vote.
MAJORITY_DUAL = {0: 0.2, 2: 0.8}


def _dirichlet_sphere(n0: int, n1: int, tkwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Dirichlet classes on the simplex in R³, mapped to S² by x = sqrt(p) (as the paper's code)."""
    d = torch.distributions.Dirichlet
    p0 = d(torch.tensor([2.0, 5.0, 3.0], **tkwargs)).sample((n0,))
    p1 = d(torch.tensor([4.0, 3.0, 3.0], **tkwargs)).sample((n1,))
    y = torch.cat([torch.zeros(n0), torch.ones(n1)]).long()
    return torch.cat([p0, p1]).sqrt(), y


def test_hermite_activation_realises_its_dual(tkwargs):
    """Monte Carlo E[φ(u)φ(v)] for unit-variance (u, v) with correlation ξ matches Σ a_k ξ^k
    (5 correlations + E[φ²] = 1; Bonferroni z-test, family-wise false-failure rate 1e-3)."""
    torch.manual_seed(0)
    act = HermiteActivation.optimal(5).to(tkwargs["device"])
    xi = torch.tensor([-0.8, -0.2, 0.3, 0.7, 0.95], **tkwargs)
    z1, z2 = torch.randn(2, 200_000, 1, **tkwargs)
    u, v = z1, xi * z1 + (1 - xi**2).sqrt() * z2
    prods = torch.cat([act(u) * act(v), act(z1) ** 2], dim=-1)
    target = torch.cat([act.dual(xi), torch.ones(1, **tkwargs)])
    z = (prods.mean(0) - target).abs() / (prods.std(0) / math.sqrt(prods.shape[0]))
    assert z.max() < z_critical(6)


def test_normalised_duals(tkwargs):
    xi = torch.linspace(-1, 1, 11, **tkwargs)
    relu = NormalisedDual.from_activation("relu")
    theta = torch.arccos(xi)
    assert torch.allclose(relu(xi), (torch.sin(theta) + (math.pi - theta) * xi) / math.pi)
    assert torch.allclose(relu.derivative(xi), (math.pi - theta) / math.pi)
    erf = NormalisedDual.from_activation("erf")  # the paper's erf dual: arcsin(2ξ/3) / arcsin(2/3)
    assert torch.allclose(erf(xi), torch.arcsin(2 * xi / 3) / math.asin(2 / 3))
    for d in OPTIMAL_DUALS:
        dual = NormalisedDual.optimal(d)
        assert dual.at(1.0) == pytest.approx(1.0)
        h = 1e-6  # central difference of the polynomial
        assert dual.at(0.3, derivative=True) == pytest.approx((dual.at(0.3 + h) - dual.at(0.3 - h)) / (2 * h), rel=1e-6)


def test_deep_ntk_equals_ntk_kernel_on_the_sphere(tkwargs):
    """Bias-free NTKKernel with σ_w² = 1/E[relu(z)²] = 2 on inputs scaled to Σ⁰ = x·x' is the paper's recursion."""
    torch.manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(7, 4, **tkwargs), dim=-1)
    kernel = NTKKernel(depth=5, bias_variance=0.0).to(**tkwargs)
    kernel.weight_variance = 2.0  # set after .to(float64): a float32 raw parameter would round it
    with torch.no_grad():
        reference = kernel(x * math.sqrt(4 / 2.0))
    ours = deep_kernel(x, x, 5, "relu", normalise=False)
    assert torch.allclose(ours, reference.to_dense(), rtol=1e-9)
    scaled = deep_kernel(x, x, 5, "relu")  # normalised: K(x, x) = 1
    assert torch.allclose(scaled, ours / ours[0, 0]) and torch.allclose(scaled.diagonal(), torch.ones(7, **tkwargs))


def test_regime_taxonomy():
    assert limit_regime("hermite_2").kind == "one_nn"
    assert limit_regime(NormalisedDual.polynomial({1: 1.0})).kind == "linear"
    relu = limit_regime("relu")
    assert relu.kind == "majority_vote" and relu.fixed_point == 1.0
    major = limit_regime(NormalisedDual.polynomial(MAJORITY_DUAL))
    assert major.kind == "majority_vote" and major.fixed_point == pytest.approx(0.25)
    for d in OPTIMAL_DUALS:  # the paper's optimal duals: Devroye exponent d - 1 for the NNGP
        assert limit_regime(d, kernel="nngp").exponent == pytest.approx(d - 1)
        assert limit_regime(d, kernel="ntk").exponent == pytest.approx(d + 1)
    s0, s1 = (2 / 3) / math.asin(2 / 3), (2 / 3) / (math.sqrt(5 / 9) * math.asin(2 / 3))
    erf = limit_regime("erf", kernel="nngp")
    assert erf.kind == "singular_kernel" and erf.exponent == pytest.approx(2 * math.log(1 / s0) / math.log(s1))


@pytest.mark.parametrize(
    ("activation", "depth", "kernel", "min_agreement"),
    [
        (3, 100, "nngp", 0.98),  # singular kernel ‖x - x_i‖^{-2}: Devroye–Hilbert on S²
        (3, 100, "ntk", 0.98),  # singular kernel ‖x - x_i‖^{-4}
        ("hermite_3", 7, "ntk", 0.95),  # 1-NN (depth kept where ξ^(3^depth) does not underflow)
        (NormalisedDual.polynomial(MAJORITY_DUAL), 30, "ntk", 0.95),  # majority vote
    ],
)
def test_deep_kernel_classifier_agrees_with_its_limit(activation, depth, kernel, min_agreement, tkwargs):
    torch.manual_seed(2)
    x_train, y_train = _dirichlet_sphere(25, 35, tkwargs)
    x_test, _ = _dirichlet_sphere(100, 100, tkwargs)
    clf = NTKClassifier(activation, depth=depth, kernel=kernel).fit(x_train, y_train)
    agreement = (clf.predict(x_test) == clf.predict_limit(x_test)).double().mean()
    assert agreement >= min_agreement
    if clf.regime.kind == "singular_kernel":
        # the exponent matters: the other kernel's exponent (α ∓ 2) fits clearly worse
        wrong = copy.copy(clf)
        wrong.regime = limit_regime(activation, "nngp" if kernel == "ntk" else "ntk")
        mismatch = (clf.predict(x_test) == wrong.predict_limit(x_test)).double().mean()
        assert mismatch < agreement - 0.03


def test_bad_input_is_rejected(tkwargs):
    x = torch.randn(4, 3, **tkwargs)
    with pytest.raises(ValueError, match="depth"):
        deep_kernel(x, x, 0, "relu")
    with pytest.raises(ValueError, match="zero rows"):
        deep_kernel(torch.zeros(2, 3, **tkwargs), x, 2, "relu")
    with pytest.raises(ValueError, match="kernel"):
        NTKClassifier("relu", kernel="gp")
    with pytest.raises(ValueError, match="coefficients"):
        NormalisedDual.polynomial({2: -1.0})
    with pytest.raises(ValueError, match="optimal"):
        HermiteActivation.optimal(4)
    with pytest.raises(ValueError, match="two classes"):
        NTKClassifier(3, depth=2).fit(x, torch.zeros(4))
    with pytest.raises(RuntimeError, match="fit"):
        NTKClassifier(3, depth=2).predict(x)
