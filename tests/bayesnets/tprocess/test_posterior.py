"""Scale-mixture / multivariate-t BoTorch posteriors: sampling laws, base samples, acquisition functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from botorch.acquisition import (
    qLogExpectedImprovement,
    qLogNoisyExpectedImprovement,
    qUpperConfidenceBound,
)
from botorch.acquisition.objective import ScalarizedPosteriorTransform
from botorch.models.transforms.outcome import Standardize
from botorch.sampling.get_sampler import get_sampler
from botorch.sampling.normal import SobolQMCNormalSampler
from scenarios import ALPHA, z_critical
from scipy import stats

from bayesnets.tprocess.posterior import MultivariateTPosterior, ScaleMixturePosterior
from bayesnets.tprocess.regression import BurrXIIRegression, NNGPRegression, TProcessRegression, fit_marginal_likelihood
from priors.processes import WeightedScales


def _t_posterior(tkwargs: dict, batch: tuple[int, ...] = ()) -> MultivariateTPosterior:
    loc = torch.tensor([0.5, -1.0, 2.0], **tkwargs).expand(*batch, 3)
    A = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [-0.3, 0.2, 0.6]], **tkwargs)
    return MultivariateTPosterior(loc, (A @ A.mT).expand(*batch, 3, 3), df=7.0)


def test_multivariate_t_samples_follow_scipy(tkwargs: dict) -> None:
    """Marginals pass KS tests against scipy's t and the sample means z-tests: 6 tests, family rate ALPHA."""
    post = _t_posterior(tkwargs)
    draws = post.rsample(torch.Size([6000])).squeeze(-1)
    assert draws.shape == (6000, 3)
    scale = post.covariance.diagonal().sqrt()
    for j in range(3):
        ref = stats.t(7.0, loc=post.loc[j].item(), scale=scale[j].item())
        assert stats.kstest(draws[:, j].cpu().numpy(), ref.cdf).pvalue > ALPHA / 6
    # mean: MCSE from the exact variance ν/(ν-2)·Σ_jj (Bonferroni over the 6 tests)
    z = (draws.mean(0) - post.mean.squeeze(-1)).abs() / (post.variance.squeeze(-1) / 6000).sqrt()
    assert bool((z < z_critical(6)).all())
    torch.testing.assert_close(post.variance.squeeze(-1), 7.0 / 5.0 * post.covariance.diagonal())


def test_base_samples_collapse_and_reproduce(tkwargs: dict) -> None:
    post = _t_posterior(tkwargs, batch=(2,))
    assert post.base_sample_shape == (2, 4, 1) and post.batch_range == (0, -2)
    sampler = get_sampler(post, torch.Size([16]), seed=0)
    assert isinstance(sampler, SobolQMCNormalSampler)
    s1, s2 = sampler(post), sampler(post)
    assert s1.shape == (16, 2, 3, 1)
    torch.testing.assert_close(s1, s2)  # fixed base samples
    torch.testing.assert_close(s1[:, 0], s1[:, 1])  # collapsed t-batches share base samples
    base = torch.randn(5, 1, 4, 1, **tkwargs)
    base[..., 3, 0] = 0.0  # the median scale
    out = post.rsample_from_base_samples(torch.Size([5]), base)
    median = post.mixing.icdf(torch.tensor(0.5, **tkwargs))
    torch.testing.assert_close(out, post.mean + median.sqrt() * post.scale_tril @ base[..., :3, :])
    with pytest.raises(ValueError, match="base_samples must have shape"):
        post.rsample_from_base_samples(torch.Size([5]), torch.randn(5, 2, 3, 1, **tkwargs))


def test_weighted_scale_mixture_samples_and_density(tkwargs: dict) -> None:
    """f = sqrt(σ²) z with σ² in {0.5, 4} (weights 0.7, 0.3): E f² = 1.55 (z-test), density = mixture."""
    mixing = WeightedScales(torch.tensor([0.5, 4.0], **tkwargs), torch.tensor([0.7, 0.3], **tkwargs).log())
    post = ScaleMixturePosterior(torch.zeros(1, **tkwargs), torch.ones(1, 1, **tkwargs), mixing)
    f2 = post.rsample(torch.Size([20000])).squeeze().square()
    assert abs(f2.mean().item() - 1.55) / (f2.std().item() / 20000**0.5) < z_critical(1)
    v = torch.tensor([[0.3], [2.0]], **tkwargs).unsqueeze(1)
    ref = np.log(0.7 * stats.norm.pdf(v.cpu().numpy(), 0, 0.5**0.5) + 0.3 * stats.norm.pdf(v.cpu().numpy(), 0, 2.0))
    np.testing.assert_allclose(post.density(v).log().cpu().numpy(), ref, rtol=1e-12)


def test_posterior_validation(tkwargs: dict) -> None:
    loc = torch.zeros(3, **tkwargs)
    with pytest.raises(ValueError, match="covariance must have shape"):
        ScaleMixturePosterior(loc, torch.eye(2, **tkwargs), WeightedScales(torch.ones(1, **tkwargs)))
    with pytest.raises(ValueError, match="df must be a positive scalar"):
        MultivariateTPosterior(loc, torch.eye(3, **tkwargs), df=0.0)


def test_indefinite_covariance_still_samples_its_nearest_psd_matrix(tkwargs: dict) -> None:
    # Two coincident points and a third: the exact covariance is singular, and a rounding error of
    # +1e-3 x its scale off the diagonal (as an acquisition optimiser's collapsed batch produces) is beyond any jitter.
    # Sampling uses V sqrt(max(lambda, 0)): a square root of the nearest PSD matrix, warned about.
    A = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.3, 0.9]], **tkwargs)
    cov = A @ A.mT + 1e-3 * torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], **tkwargs)
    post = MultivariateTPosterior(torch.zeros(3, **tkwargs), cov, df=5.0)
    with pytest.warns(RuntimeWarning, match="not positive definite .* nearest positive semi-definite"):
        factor = post.scale_tril
    eigenvalues, vectors = torch.linalg.eigh(cov)
    nearest = (vectors * eigenvalues.clamp_min(0.0)) @ vectors.mT
    torch.testing.assert_close(factor @ factor.mT, nearest)
    samples = post.rsample(torch.Size([64]))
    assert samples.shape == (64, 3, 1) and bool(torch.isfinite(samples).all())
    with pytest.raises(ValueError, match="non-finite"):
        MultivariateTPosterior(torch.zeros(3, **tkwargs), cov * float("nan"), df=5.0).rsample()


@pytest.mark.parametrize("cls", [TProcessRegression, BurrXIIRegression, NNGPRegression])
def test_mc_acquisition_functions_run_with_gradients(cls, tkwargs: dict) -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.rand(12, 2, generator=g, dtype=torch.float64).to(**tkwargs)
    Y = torch.sin(6 * X[:, :1]) + X[:, 1:] ** 2
    model = cls(X, Y, outcome_transform=Standardize(m=1))
    fit_marginal_likelihood(model, num_steps=20)
    acqfs = [
        qLogExpectedImprovement(model, best_f=Y.max()),
        qUpperConfidenceBound(model, beta=2.0),
        qLogNoisyExpectedImprovement(model, X_baseline=X, prune_baseline=False),
        qUpperConfidenceBound(model, beta=2.0, posterior_transform=ScalarizedPosteriorTransform(
            weights=torch.tensor([-1.0], **tkwargs))),
    ]
    for acqf in acqfs:
        Xq = torch.rand(3, 2, 2, generator=g, dtype=torch.float64).to(**tkwargs).requires_grad_(True)
        value = acqf(Xq)
        value.sum().backward()
        assert value.shape == (3,) and torch.isfinite(value).all()
        assert torch.isfinite(Xq.grad).all() and Xq.grad.abs().sum() > 0, type(acqf).__name__


def test_scalarized_transform_negates(tkwargs: dict) -> None:
    X = torch.rand(10, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(**tkwargs)
    model = TProcessRegression(X, X.sum(-1, keepdim=True)).eval()
    Xt = X[:3] + 0.05
    neg = model.posterior(Xt, posterior_transform=ScalarizedPosteriorTransform(torch.tensor([-1.0], **tkwargs), 2.0))
    post = model.posterior(Xt)
    torch.testing.assert_close(neg.mean, 2.0 - post.mean)
    torch.testing.assert_close(neg.variance, post.variance)
