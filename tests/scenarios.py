"""Analytic targets shared by the tests, and the MCSE z-test every sampler test uses.

A sampler test compares posterior means (and second moments) with closed forms by
``z = |estimate - truth| / MCSE``, MCSE from ArviZ (ESS-corrected). With ``K`` such
comparisons in one test, each uses the two-sided Bonferroni threshold
``z* = Phi^-1(1 - alpha / (2K))``, so a correct sampler fails the whole test with
probability at most ``alpha`` (default 1e-3), up to the accuracy of the MCSE estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.stats import norm
from torch import Tensor

from inference import diagnostics

#: Default family-wise false-failure rate of a statistical test.
ALPHA = 1e-3


@dataclass
class GaussianTarget:
    """A Gaussian posterior with known mean ``[D]`` and covariance ``[D, D]``."""

    mean: Tensor
    cov: Tensor


def conjugate_gaussian_mean(n: int = 20, prior_mean: float = 0.0, prior_scale: float = 2.0,
                            noise: float = 1.0, true_mean: float = 1.0,
                            **tkwargs) -> tuple[Tensor, GaussianTarget]:
    """Observations ``y_i ~ N(mu, noise^2)`` with prior ``mu ~ N(prior_mean, prior_scale^2)``.

    Returns:
        ``y`` ``[n]`` and the exact posterior of ``mu`` (``D = 1``).
    """
    y = true_mean + noise * torch.randn(n, **tkwargs)
    precision = 1 / prior_scale**2 + n / noise**2
    var = 1 / precision
    mean = var * (prior_mean / prior_scale**2 + y.sum() / noise**2)
    return y, GaussianTarget(mean.reshape(1), torch.tensor([[var]], **tkwargs))


def bayesian_linear_regression(n: int = 30, d: int = 2, prior_scale: float = 1.0, noise: float = 0.5,
                               **tkwargs) -> tuple[Tensor, Tensor, GaussianTarget]:
    """``y = x w + b + N(0, noise^2)`` with i.i.d. ``N(0, prior_scale^2)`` priors on ``w`` and ``b``.

    Returns:
        ``x`` ``[n, d]``, ``y`` ``[n]`` and the exact posterior of ``[w_1..w_d, b]``.
    """
    x = torch.randn(n, d, **tkwargs)
    w = torch.randn(d, **tkwargs)
    y = x @ w + 0.3 + noise * torch.randn(n, **tkwargs)
    xa = torch.cat([x, torch.ones(n, 1, **tkwargs)], 1)
    precision = xa.T @ xa / noise**2 + torch.eye(d + 1, **tkwargs) / prior_scale**2
    cov = torch.linalg.inv(precision)
    mean = cov @ xa.T @ y / noise**2
    return x, y, GaussianTarget(mean, cov)


def z_critical(num_tests: int, alpha: float = ALPHA) -> float:
    """Two-sided Bonferroni threshold for ``num_tests`` z-tests at family-wise rate ``alpha``."""
    return float(norm.ppf(1 - alpha / (2 * num_tests)))


def moment_draws(draws: Tensor, target: GaussianTarget) -> dict[str, Tensor]:
    """Quantities whose posterior means are known: the coordinates (mean ``target.mean``)
    and the centred products ``(x_i - m_i)(x_j - m_j)`` for ``i <= j`` (mean ``cov_ij``).

    Args:
        draws: ``[chain, draw, D]``.
    """
    c = draws - target.mean
    iu = torch.triu_indices(c.shape[-1], c.shape[-1])
    prods = (c.unsqueeze(-1) * c.unsqueeze(-2))[..., iu[0], iu[1]]
    return {"mean": draws, "cov": prods}


def assert_moments_match(draws: Tensor, target: GaussianTarget, alpha: float = ALPHA) -> dict[str, float]:
    """MCSE z-test of posterior means and covariances against a Gaussian target.

    Args:
        draws: ``[chain, draw, D]`` posterior draws.

    Returns:
        The largest z of each kind (for reporting).
    """
    q = moment_draws(draws.double(), target)
    iu = torch.triu_indices(target.cov.shape[0], target.cov.shape[0])
    truth = {"mean": target.mean, "cov": target.cov[iu[0], iu[1]]}
    se = diagnostics.mcse({k: v.cpu() for k, v in q.items()})
    k = sum(v.numel() for v in truth.values())
    zc = z_critical(k, alpha)
    worst = {}
    for name, t in truth.items():
        est = q[name].mean((0, 1)).cpu()
        z = (est - t.cpu()).abs() / se[name].double()
        worst[name] = float(z.max())
        assert bool((z < zc).all()), (
            f"{name}: estimate {est.tolist()} vs truth {t.tolist()}, z = {z.tolist()} (threshold {zc:.2f} "
            f"for {k} tests at alpha={alpha})"
        )
    return worst
