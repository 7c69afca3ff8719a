"""NPPredictive: mixture moments, per-point and joint log-densities, coherent function samples."""

from __future__ import annotations

import math

import pytest
import torch
from scenarios import z_critical

from bayesnets.processes.predictive import NPPredictive


def test_moments_and_log_prob(tkwargs):
    loc, scale = torch.randn(4, 2, 3, 1, **tkwargs), torch.rand(4, 2, 3, 1, **tkwargs) + 0.1
    pred = NPPredictive(loc, scale)
    assert pred.batch_shape == (2, 3) and pred.event_shape == (1,) and pred.num_components == 4
    torch.testing.assert_close(pred.mean, loc.mean(0))
    second = (scale**2 + loc**2).mean(0)
    torch.testing.assert_close(pred.variance, second - loc.mean(0) ** 2)
    torch.testing.assert_close(pred.std, pred.variance.sqrt())
    y = torch.randn(2, 3, 1, **tkwargs)
    dens = torch.exp(-0.5 * ((y - loc) / scale) ** 2) / (scale * math.sqrt(2 * math.pi))  # [4, 2, 3, 1]
    torch.testing.assert_close(pred.log_prob(y), dens[..., 0].mean(0).log())
    torch.testing.assert_close(pred.log_prob(y[..., 0]), pred.log_prob(y))  # y_dim = 1 may drop its axis
    torch.testing.assert_close(pred.joint_log_prob(y), dens[..., 0].prod(-1).mean(0).log())
    with pytest.raises(ValueError, match="value must have shape"):
        pred.log_prob(torch.randn(2, 4, 1, **tkwargs))


def test_samples_are_coherent_functions(tkwargs):
    # Two well-separated draws with tiny noise: each sampled function follows one draw at every point.
    loc = torch.stack([torch.zeros(3, 5, 1, **tkwargs), torch.ones(3, 5, 1, **tkwargs)])
    pred = NPPredictive(loc, torch.full_like(loc, 1e-3))
    s = pred.sample((400,))
    assert s.shape == (400, 3, 5, 1)
    which = s.round()
    assert (which == which[..., :1, :]).all()
    # Each draw is picked with probability 1/2: binomial z-test (false-failure rate 1e-3).
    frac = which[:, :, 0, 0].mean()
    assert (frac - 0.5).abs() / math.sqrt(0.25 / which[:, :, 0, 0].numel()) < z_critical(1)


def test_sample_moments(tkwargs):
    """Sample mean and variance match the mixture's (MCSE z-tests, Bonferroni over 2, rate 1e-3)."""
    loc, scale = torch.tensor([[-1.0], [2.0]], **tkwargs)[:, None], torch.tensor([[0.5], [1.0]], **tkwargs)[:, None]
    pred = NPPredictive(loc, scale)  # K = 2, one task, one point
    s = pred.sample((40000,)).flatten()
    zc = z_critical(2)
    assert (s.mean() - pred.mean.squeeze()).abs() / (s.std() / 200) < zc
    sq = (s - pred.mean.squeeze()) ** 2
    assert (sq.mean() - pred.variance.squeeze()).abs() / (sq.std() / 200) < zc


def test_bad_shapes(tkwargs):
    with pytest.raises(ValueError, match="share a shape"):
        NPPredictive(torch.zeros(2, 3, 1, **tkwargs), torch.ones(2, 3, 2, **tkwargs))
