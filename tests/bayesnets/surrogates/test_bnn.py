"""BNNSurrogate: the ensemble posterior's fixed base samples, noise."""

from __future__ import annotations

import pytest
import torch
from botorch.acquisition import qLogExpectedImprovement
from botorch.posteriors.ensemble import EnsemblePosterior

from bayesnets.surrogates.bnn import BNNSurrogate, make_engine, mlp


def test_posterior_is_an_ensemble_with_fixed_base_samples(fit, device):
    model = fit("hmc", torch.float64, device)
    X = torch.rand(5, 1, 2, dtype=torch.float64, device=device)
    post = model.posterior(X)
    assert isinstance(post, EnsemblePosterior) and post.ensemble_size == model.ensemble_size == 20
    acqf = qLogExpectedImprovement(model, best_f=0.3)
    torch.testing.assert_close(acqf(X), acqf(X))  # IndexSampler: same members, same value


def test_observation_noise_adds_each_members_noise_deterministically(fit, device):
    model = fit("ensemble", torch.float64, device)
    X = torch.rand(40, 2, dtype=torch.float64, device=device)
    noisy = model.posterior(X, observation_noise=True)
    torch.testing.assert_close(noisy.values, model.posterior(X, observation_noise=True).values)
    assert noisy.variance.mean() > model.posterior(X).variance.mean()
    with pytest.raises(ValueError, match="observation_noise must be a bool"):
        model.posterior(X, observation_noise=torch.ones(40, 1, dtype=torch.float64, device=device))


def test_fixed_noise_and_transforms(tkwargs, objective):
    from botorch.models.transforms.input import Normalize

    X = torch.rand(10, 2, **tkwargs) * 4 - 2  # outside the unit cube: Normalize maps it there
    Y = objective(X)
    model = BNNSurrogate(X, Y, inference="hmc", noise=0.05, width=8, depth=1, input_transform=Normalize(d=2),
                         engine_options={"num_warmup": 30, "num_samples": 5, "num_chains": 2})
    assert bool((model.noise_scale == 0.05).all())
    assert model.posterior(X).mean.shape == (10, 1)
    assert float(model.fitted_X.min()) >= 0 and float(model.fitted_X.max()) <= 1


def test_bad_arguments(tkwargs):
    with pytest.raises(ValueError, match="inference must be one of"):
        make_engine("laplace", 10, 0)
    with pytest.raises(ValueError, match="activation must be one of"):
        mlp(2, 1, activation="swish")
    X = torch.rand(6, 2, **tkwargs)
    model_kw = {"engine_options": {"num_warmup": 10, "num_samples": 2, "num_chains": 2}, "width": 4, "depth": 1}
    model = BNNSurrogate(X, X[:, :1], **model_kw)
    with pytest.raises(ValueError, match=r"X must have shape \[\*batch, n, d\] with d = 2"):
        model.posterior(torch.rand(3, 5, **tkwargs))
    with pytest.raises(ValueError, match="X must be a finite tensor"):
        model.posterior(torch.full((3, 2), float("nan"), **tkwargs))
