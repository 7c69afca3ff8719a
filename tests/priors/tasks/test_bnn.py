"""Random-MLP task prior: shapes, labels, and the exact target variance of a linear net."""

from __future__ import annotations

import math

import pytest
import torch
from scenarios import z_critical

from priors.tasks import BNNPrior


def test_classification_batches(tkwargs: dict) -> None:
    prior = BNNPrior(max_features=3, hidden=(5,), num_classes=3).to(**tkwargs)
    g = torch.Generator(device=tkwargs["device"]).manual_seed(0)
    x, y = prior.sample(16, 40, generator=g)
    assert x.shape == (16, 40, 3) and y.shape == (16, 40) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 1, 2} and len(y.unique()) > 1
    x2, y2 = prior.sample(16, 40, generator=torch.Generator(device=tkwargs["device"]).manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_linear_regression_net_has_the_prior_variance(tkwargs: dict) -> None:
    """With no hidden layer, y = x.w + b + noise with x ~ N(0, I_d): Var y = d w^2 + b^2 + s^2."""
    prior = BNNPrior(max_features=2, hidden=(), activation="identity", weight_std=0.7, bias_std=0.4,
                     task="regression", noise_std=0.3).to(**tkwargs)
    g = torch.Generator(device=tkwargs["device"]).manual_seed(0)
    _, y = prior.sample(4000, 1, generator=g)  # one point per dataset: independent draws
    var = 2 * 0.7**2 + 0.4**2 + 0.3**2
    # Var of the sample variance of Gaussians is 2 var^2 / (n - 1); z-test at false-failure rate 1e-4.
    assert abs(float(y.var()) - var) / math.sqrt(2 * var**2 / (y.numel() - 1)) < z_critical(1, 1e-4)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="task"):
        BNNPrior(task="ranking")
    with pytest.raises(ValueError, match="activation"):
        BNNPrior(activation="swish")
    with pytest.raises(ValueError, match="num_classes"):
        BNNPrior(num_classes=1)
    with pytest.raises(ValueError, match="batch_size"):
        BNNPrior().sample(0, 3)
