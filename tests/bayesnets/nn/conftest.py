"""Shared check for the ``bayesnets.nn`` layers: a BayesianNet holding the layer trains with SVI."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from bayesnets import BayesianNet, Gaussian
from inference import SVI
from inference.posterior import Posterior
from priors import LayerwiseGaussian

#: Steps of the small SVI fit: enough for a clear ELBO gain, a few seconds on CPU.
SVI_STEPS = 120
#: Draws kept from the fitted guide.
SVI_DRAWS = 16


@pytest.fixture
def fit_small_regression(tkwargs) -> Callable[[nn.Module], tuple[BayesianNet, Posterior, torch.Tensor, torch.Tensor]]:
    """Fit ``BayesianNet(net)`` with mean-field SVI to 48 points of a smooth 2-D regression.

    Checks that every ELBO is finite and that training really improved it: the mean of the
    last 20 steps' ELBO exceeds the first 20's by a quarter of its size (single-particle
    ELBOs scatter by ~30% step to step here; the gain over 120 steps is ~50-90%).
    Returns ``(model, posterior, x, y)``.
    """

    def fit(net: nn.Module) -> tuple[BayesianNet, Posterior, torch.Tensor, torch.Tensor]:
        model = BayesianNet(net.to(**tkwargs), LayerwiseGaussian(1.0), Gaussian(scale=0.1))
        x = torch.randn(48, 2, **tkwargs)
        y = torch.sin(2.0 * x[:, 0]) + 0.5 * x[:, 1]
        post = SVI(num_steps=SVI_STEPS, lr=0.02, num_samples=SVI_DRAWS, seed=0).fit(model, x, y, progress=False)
        elbo = post.stats["elbo"]
        assert torch.isfinite(elbo).all()
        assert elbo[-20:].mean() > elbo[:20].mean() + 0.25 * elbo[:20].mean().abs(), elbo
        return model, post, x, y

    return fit
