"""Distance estimators against closed forms between known Gaussians."""

from __future__ import annotations

import math

import pytest
import torch

from priors.wasserstein import (
    LipschitzCritic,
    critic_wasserstein,
    gaussian_w2,
    moment_matched_w2,
    sliced_wasserstein,
    sqrtm_psd,
)


def _random_cov(m: int, **tkwargs) -> torch.Tensor:
    a = torch.randn(m, m, **tkwargs)
    return a @ a.T / m + 0.1 * torch.eye(m, **tkwargs)


def test_gaussian_w2_closed_forms(tkwargs):
    # 1-D: W2^2 = (m1 - m2)^2 + (s1 - s2)^2; diagonal covariances add up coordinate-wise.
    m1, m2 = torch.tensor([0.3, -1.0], **tkwargs), torch.tensor([1.0, 0.5], **tkwargs)
    s1, s2 = torch.tensor([0.5, 2.0], **tkwargs), torch.tensor([1.5, 1.0], **tkwargs)
    want = math.sqrt(float(((m1 - m2) ** 2 + (s1 - s2) ** 2).sum()))
    got = gaussian_w2(m1, torch.diag(s1**2), m2, torch.diag(s2**2))
    assert math.isclose(float(got), want, rel_tol=1e-9)
    cov = _random_cov(4, **tkwargs)
    assert float(gaussian_w2(m1.new_zeros(4), cov, m1.new_zeros(4), cov)) < 1e-6
    s = sqrtm_psd(cov)
    assert torch.allclose(s @ s, cov, atol=1e-10)


def test_moment_matched_w2_agrees_with_closed_form(tkwargs):
    m = 5
    c1, c2 = _random_cov(m, **tkwargs), _random_cov(m, **tkwargs)
    mean2 = 0.5 * torch.randn(m, **tkwargs)
    want = float(gaussian_w2(torch.zeros(m, **tkwargs), c1, mean2, c2))
    draws = torch.randn(4000, m, **tkwargs) @ torch.linalg.cholesky(c1).T
    got = float(moment_matched_w2(draws, mean2, c2))
    # Over 50 seeds this estimate (4,000 draws) had sd 0.014 at W2 = 1.65 and a bias of
    # +0.002; the tolerance 0.07 is 5 sd (false-failure rate ~1e-6 under normality).
    assert abs(got - want) < 0.07, (got, want)


def test_moment_matched_w2_gradient_is_finite_when_rank_deficient(tkwargs):
    # n <= M: the sample covariance is singular, where eigenvalue square roots have
    # unbounded gradients; the nuclear-norm form keeps them finite.
    m = 30
    draws = torch.randn(10, m, **tkwargs).requires_grad_(True)
    w = moment_matched_w2(draws, torch.zeros(m, **tkwargs), torch.eye(m, **tkwargs))
    w.backward()
    assert torch.isfinite(draws.grad).all()


@pytest.mark.parametrize(("shift", "s1", "s2"), [(2.0, 1.0, 1.0), (0.0, 1.5, 0.7)])
def test_sliced_agrees_with_w2_for_isotropic_shift_and_scale(tkwargs, shift, s1, s2):
    # For N(mu, s1^2 I) vs N(0, s2^2 I) every projection is N(theta.mu, s1^2) vs N(0, s2^2), so
    # SW2^2 = |mu|^2 / M + (s1 - s2)^2 = W2^2 / M exactly.
    m = 6
    mu = torch.full((m,), shift / math.sqrt(m), **tkwargs)
    p = mu + s1 * torch.randn(4000, m, **tkwargs)
    q = s2 * torch.randn(4000, m, **tkwargs)
    want = float(gaussian_w2(mu, s1**2 * torch.eye(m, **tkwargs), torch.zeros(m, **tkwargs),
                             s2**2 * torch.eye(m, **tkwargs)))
    got = float(sliced_wasserstein(p, q, num_projections=500)) * math.sqrt(m)
    # Over 20 seeds the relative error had mean -0.003 / 0.002 and sd 0.022 (shift) / 0.011
    # (scale); 0.12 is > 5 sd of the worse case.
    assert abs(got / want - 1) < 0.12, (got, want)


def test_critic_agrees_with_w1_for_a_shift():
    # W1 = W2 = |shift| for a translated Gaussian. The gradient penalty lam (|grad phi| - 1)^2
    # lets the best linear critic take slope 1 + |shift| / (2 lam), so the penalised dual
    # estimates |shift| (1 + |shift| / (2 lam)) = 2.2 here (Gulrajani et al. 2017's soft
    # constraint, the paper's estimator).
    torch.manual_seed(0)
    m, shift, lam = 4, 2.0, 10.0
    mu = torch.full((m,), shift / math.sqrt(m))
    p, q = mu + torch.randn(8192, m), torch.randn(8192, m)  # evaluation draws
    train = (mu + torch.randn(512, m), torch.randn(512, m))
    got = float(critic_wasserstein(p, q, LipschitzCritic(m, hidden=64), train=train, steps=300, lr=0.02, penalty=lam,
                                   threshold=None))
    want = shift * (1 + shift / (2 * lam))
    # Over 10 seeds: mean 2.193, sd 0.039 (largest deviation 0.08); 0.2 is 5 sd.
    assert abs(got - want) < 0.2, (got, want)


def test_critic_gradient_reaches_p():
    p = torch.randn(64, 3).requires_grad_(True)
    w = critic_wasserstein(p, torch.randn(64, 3) + 1.0, steps=5)
    w.backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_bad_draws():
    with pytest.raises(ValueError, match="same M points"):
        sliced_wasserstein(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="same number of draws"):
        sliced_wasserstein(torch.randn(10, 3), torch.randn(12, 3))
    with pytest.raises(ValueError, match=r"\[n, M\]"):
        critic_wasserstein(torch.randn(10), torch.randn(10, 3))
    with pytest.raises(ValueError, match="mean and cov"):
        moment_matched_w2(torch.randn(10, 3), torch.zeros(4), torch.eye(4))
