"""Scale mixtures of NNGPs: scale distributions against scipy, exact and importance-sampled evidence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scenarios import ALPHA
from scipy import integrate, special, stats

from priors.kernels import NNGPKernel
from priors.processes import (
    BurrXII,
    BurrXIIScale,
    DistributionScale,
    FixedScale,
    InverseGamma,
    InverseGammaScale,
    ScaleMixtureNNGP,
    WeightedScales,
    gamma_icdf,
    mixture_log_prob,
    psd_cholesky,
)


def _kernel(tkwargs: dict) -> NNGPKernel:
    return NNGPKernel(depth=2, activation="erf", weight_variance=1.7, bias_variance=0.3).to(**tkwargs)


def _data(tkwargs: dict, n: int = 12):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64).to(**tkwargs)
    y = (torch.sin(2 * X[:, 0]) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64).to(**tkwargs))
    return X, y


# ---------------------------------------------------------------------- scale distributions
@pytest.mark.parametrize("a", [0.3, 1.0, 5.0, 200.0])
def test_gamma_icdf_matches_scipy(a: float, tkwargs: dict) -> None:
    p = torch.tensor([1e-12, 1e-4, 0.1, 0.5, 0.9, 1 - 1e-4], **tkwargs)
    x = gamma_icdf(p, torch.tensor(a, **tkwargs))
    np.testing.assert_allclose(x.cpu().numpy(), special.gammaincinv(a, p.cpu().numpy()), rtol=1e-10)
    upper = torch.tensor([1e-14, 1e-6], **tkwargs)  # far upper tail, given without cancellation
    x = gamma_icdf(1 - upper, torch.tensor(a, **tkwargs), upper=upper)
    np.testing.assert_allclose(x.cpu().numpy(), special.gammainccinv(a, upper.cpu().numpy()), rtol=1e-10)


def test_inverse_gamma_cdf_icdf_match_scipy(tkwargs: dict) -> None:
    a, b = 2.5, 1.3
    d = InverseGamma(torch.tensor(a, **tkwargs), torch.tensor(b, **tkwargs))
    ref = stats.invgamma(a, scale=b)
    v = torch.tensor([0.05, 0.4, 1.0, 7.0], **tkwargs)
    np.testing.assert_allclose(d.cdf(v).cpu().numpy(), ref.cdf(v.cpu().numpy()), rtol=1e-12)
    u = torch.tensor([1e-6, 0.3, 0.5, 0.99], **tkwargs)
    np.testing.assert_allclose(d.icdf(u).cpu().numpy(), ref.ppf(u.cpu().numpy()), rtol=1e-10)
    z = torch.tensor([-8.0, 0.0, 8.0], **tkwargs)  # both tails, where Φ(z) rounds to 0 or 1 in 1 - Φ
    zn = z.cpu().numpy()
    expected = np.where(zn < 0, ref.ppf(stats.norm.cdf(zn)), ref.isf(stats.norm.sf(zn)))
    np.testing.assert_allclose(d.from_normal(z).cpu().numpy(), expected, rtol=1e-9)
    assert float(d.from_normal(torch.tensor(9.0, **tkwargs))) < math.inf


def test_burr12_matches_scipy(tkwargs: dict) -> None:
    c, d, lam = 2.0, 1.5, 0.7
    burr = BurrXII(torch.tensor(c, **tkwargs), torch.tensor(d, **tkwargs), torch.tensor(lam, **tkwargs))
    ref = stats.burr12(c, d, scale=lam)
    v = torch.tensor([1e-3, 0.2, 0.7, 3.0, 50.0], **tkwargs)
    np.testing.assert_allclose(burr.log_prob(v).cpu().numpy(), ref.logpdf(v.cpu().numpy()), rtol=1e-12)
    np.testing.assert_allclose(burr.cdf(v).cpu().numpy(), ref.cdf(v.cpu().numpy()), rtol=1e-12)
    u = torch.tensor([1e-5, 0.25, 0.5, 0.999], **tkwargs)
    np.testing.assert_allclose(burr.icdf(u).cpu().numpy(), ref.ppf(u.cpu().numpy()), rtol=1e-12)
    np.testing.assert_allclose(float(burr.mean), ref.mean(), rtol=1e-12)
    assert math.isinf(float(BurrXII(torch.tensor(1.0, **tkwargs), torch.tensor(0.5, **tkwargs)).mean))  # cd <= 1
    # reparameterised draws: KS test against scipy's cdf at family-wise false-failure rate ALPHA
    draws = burr.rsample(torch.Size([4000]))
    assert stats.kstest(draws.cpu().numpy(), ref.cdf).pvalue > ALPHA


def test_weighted_scales(tkwargs: dict) -> None:
    scales = torch.tensor([3.0, 1.0, 2.0], **tkwargs)
    w = WeightedScales(scales, torch.tensor([0.5, 0.2, 0.3], **tkwargs).log())
    assert float(w.mean) == pytest.approx(0.5 * 3 + 0.2 * 1 + 0.3 * 2)
    assert float(w.effective_sample_size) == pytest.approx(1 / (0.25 + 0.04 + 0.09))
    # icdf over sorted atoms 1 (0.2), 2 (0.3), 3 (0.5)
    u = torch.tensor([0.1, 0.35, 0.6, 0.99], **tkwargs)
    assert w.icdf(u).tolist() == [1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="scales must be"):
        WeightedScales(scales.unsqueeze(0))


def test_mixture_log_prob_closed_forms(tkwargs: dict) -> None:
    value, loc, var = (torch.tensor(v, **tkwargs) for v in ([0.3, -2.0], [0.1, 0.5], [0.4, 2.0]))
    a, b = 3.0, 2.0
    ig = InverseGamma(torch.tensor(a, **tkwargs), torch.tensor(b, **tkwargs))
    ref = stats.t.logpdf(value.cpu().numpy(), 2 * a, loc.cpu().numpy(), np.sqrt(b / a * var.cpu().numpy()))
    np.testing.assert_allclose(mixture_log_prob(value, loc, var, ig).cpu().numpy(), ref, rtol=1e-12)
    s, p = np.array([0.5, 2.0]), np.array([0.25, 0.75])
    w = WeightedScales(torch.tensor(s, **tkwargs), torch.tensor(p, **tkwargs).log())
    v, m, vv = (t.cpu().numpy()[:, None] for t in (value, loc, var))
    ref = np.log((p * stats.norm.pdf(v, m, np.sqrt(s * vv))).sum(-1))
    np.testing.assert_allclose(mixture_log_prob(value, loc, var, w).cpu().numpy(), ref, rtol=1e-12)
    with pytest.raises(TypeError, match="InverseGamma and WeightedScales"):
        mixture_log_prob(value, loc, var, torch.distributions.Gamma(1.0, 1.0))


# ---------------------------------------------------------------------- evidence
def test_student_t_evidence_matches_scipy_multivariate_t(tkwargs: dict) -> None:
    X, y = _data(tkwargs)
    alpha, beta, noise = 1.7, 0.9, 0.05
    process = ScaleMixtureNNGP(_kernel(tkwargs), InverseGammaScale(alpha, beta)).to(**tkwargs)
    lml = process.log_marginal_likelihood(X, y, noise)
    C = process.covariance(X, noise).detach().cpu().numpy()
    ref = stats.multivariate_t(np.zeros(len(y)), beta / alpha * C, df=2 * alpha).logpdf(y.cpu().numpy())
    assert lml.item() == pytest.approx(ref, rel=1e-12)
    posterior = process.condition(X, y, noise).mixing  # InvGamma(α + n/2, β + q/2)
    q = float(y @ torch.linalg.solve(torch.as_tensor(C, **tkwargs), y))
    assert posterior.concentration.item() == pytest.approx(alpha + len(y) / 2)
    assert posterior.rate.item() == pytest.approx(beta + q / 2, rel=1e-12)


def test_fixed_scale_evidence_is_gaussian(tkwargs: dict) -> None:
    X, y = _data(tkwargs)
    process = ScaleMixtureNNGP(_kernel(tkwargs), FixedScale(0.6)).to(**tkwargs)
    C = process.covariance(X, 0.1).detach().cpu().numpy()
    ref = stats.multivariate_normal(np.zeros(len(y)), 0.6 * C).logpdf(y.cpu().numpy())
    assert process.log_marginal_likelihood(X, y, 0.1).item() == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("proposal", ["likelihood", "prior"])
def test_importance_sampling_reproduces_the_conjugate_case(proposal: str, tkwargs: dict) -> None:
    """An inverse-gamma prior pushed through the generic (importance sampling) path."""
    X, y = _data(tkwargs, n=40)
    kernel = _kernel(tkwargs)
    a, b = torch.tensor(1.5, **tkwargs), torch.tensor(0.8, **tkwargs)
    exact = ScaleMixtureNNGP(kernel, InverseGamma(a, b))
    generic = ScaleMixtureNNGP(kernel, DistributionScale(InverseGamma(a, b), proposal=proposal))
    ce, cg = exact.condition(X, y, 0.05), generic.condition(X, y, 0.05)
    assert cg.log_marginal.item() == pytest.approx(ce.log_marginal.item(), rel=1e-8)
    Xt = X[:5] + 0.1
    loc, cov, _ = exact.predict(ce, Xt, observation_noise=True)
    y_test = loc + 2.0 * cov.diagonal().sqrt()  # two predictive sds out: tests the tails too
    lp_exact = mixture_log_prob(y_test, loc, cov.diagonal(), ce.mixing)
    lp_generic = mixture_log_prob(y_test, loc, cov.diagonal(), cg.mixing)
    torch.testing.assert_close(lp_generic, lp_exact, rtol=1e-7, atol=1e-9)


def test_burr_evidence_matches_quadrature(tkwargs: dict) -> None:
    """The Burr XII evidence integral, by scipy's adaptive quadrature in log σ² (independent of ours)."""
    X, y = _data(tkwargs, n=30)
    c, d, lam, noise = 2.0, 1.0, 0.5, 0.05
    process = ScaleMixtureNNGP(_kernel(tkwargs), BurrXIIScale(c, d, lam)).to(**tkwargs)
    lml = process.log_marginal_likelihood(X, y, noise).item()
    C = process.covariance(X, noise).detach().cpu().numpy()
    yn = y.cpu().numpy()
    n, q = len(yn), float(yn @ np.linalg.solve(C, yn))
    gauss = -0.5 * n * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(C)[1]
    log_peak = math.log(q / n)

    def integrand(t: float) -> float:  # p(σ²) N(y; 0, σ² C) dσ² with σ² = e^t, scaled by the peak
        s = math.exp(t)
        return math.exp(stats.burr12.logpdf(s, c, d, scale=lam) + t - 0.5 * n * (t - log_peak) - 0.5 * q / s + 0.5 * n)
    val, _ = integrate.quad(integrand, log_peak - 15, log_peak + 15, limit=200, epsabs=0, epsrel=1e-12)
    ref = gauss + math.log(val) - 0.5 * n * log_peak - 0.5 * n
    assert lml == pytest.approx(ref, rel=1e-8)


def test_prior_draws_are_student_t(tkwargs: dict) -> None:
    """Marginal of f(x) under σ² ~ InvGamma(α, β) is t_{2α}(0, (β/α) k(x, x)): KS test at rate ALPHA."""
    X, _ = _data(tkwargs, n=3)
    alpha, beta = 1.5, 2.0
    process = ScaleMixtureNNGP(_kernel(tkwargs), InverseGammaScale(alpha, beta)).to(**tkwargs)
    f = process.sample(X, torch.Size([4000]))
    assert f.shape == (4000, 3)
    kxx = process.kernel(X[:1], diag=True).item()
    ref = stats.t(2 * alpha, scale=math.sqrt(beta / alpha * kxx))
    assert stats.kstest(f[:, 0].cpu().numpy(), ref.cdf).pvalue > ALPHA


# ---------------------------------------------------------------------- numerics and bad input
def test_psd_cholesky_jitter_and_errors(tkwargs: dict) -> None:
    x = torch.randn(5, 2, **tkwargs)
    x = torch.cat([x, x[:2]])  # duplicated points: K is singular
    K = _kernel(tkwargs)(x, x).to_dense().detach()
    with pytest.warns(RuntimeWarning, match="jitter"):
        L, jitter = psd_cholesky(K)
    assert jitter > 0 and torch.allclose(L @ L.mT, K, atol=1e-6)
    _, none = psd_cholesky(K + torch.eye(7, **tkwargs))
    assert none == 0.0
    # LAPACK factorises this one (its pivots are positive), but a squared pivot of 1e-20 of the
    # diagonal is round-off of zero in float64: it must get jitter on every machine.
    tiny = torch.diag(torch.tensor([1.0, 1e-20], **tkwargs))
    assert int(torch.linalg.cholesky_ex(tiny).info) == 0
    with pytest.warns(RuntimeWarning, match="jitter"):
        _, jitter = psd_cholesky(tiny)
    assert jitter > 0
    with pytest.raises(ValueError, match="non-finite"):
        psd_cholesky(torch.full((2, 2), math.nan, **tkwargs))
    with pytest.raises(ValueError, match="not positive definite"):
        psd_cholesky(-torch.eye(3, **tkwargs))


def test_bad_scale_priors_raise() -> None:
    with pytest.raises(ValueError, match="alpha"):
        InverseGammaScale(alpha=0.0)
    with pytest.raises(ValueError, match="beta"):
        InverseGammaScale(beta=-1.0)
    with pytest.raises(ValueError, match="c must be"):
        BurrXIIScale(c=-2.0)
    with pytest.raises(ValueError, match="num_samples"):
        BurrXIIScale(num_samples=0)
    with pytest.raises(ValueError, match="proposal"):
        BurrXIIScale(proposal="posterior")
    with pytest.raises(TypeError, match="scalar torch Distribution"):
        DistributionScale(torch.distributions.Gamma(torch.ones(2), torch.ones(2)))
    with pytest.raises(TypeError, match="gpytorch Kernel"):
        ScaleMixtureNNGP(lambda a, b: a @ b.T, FixedScale())
    with pytest.raises(TypeError, match="ScalePrior"):
        ScaleMixtureNNGP(NNGPKernel(), 2.0)
    ig = InverseGammaScale()
    with pytest.raises(ValueError, match="alpha"):
        ig.alpha = 0.0
