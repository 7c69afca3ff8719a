"""SVI with Pyro autoguides: the full-rank guide recovers a Gaussian posterior."""

from __future__ import annotations

import pytest
import torch
from scenarios import bayesian_linear_regression, z_critical
from torch import nn

from bayesnets import BayesianNet, Gaussian
from inference import SVI
from priors import IIDGaussian


def _model(**tkwargs) -> BayesianNet:
    return BayesianNet(nn.Linear(2, 1).to(**tkwargs), IIDGaussian(1.0), Gaussian(scale=0.5))


def test_full_rank_guide_matches_conjugate_linear_regression(tkwargs):
    # The full-rank Gaussian family contains the exact posterior, so the ELBO optimum is
    # exact; what remains is Adam's optimisation error plus the Monte Carlo error of the
    # draws. Tolerance (fixed in advance): z-threshold x MC standard error + 5% of the
    # posterior sd for the means, and 10% relative error for the covariance (the
    # optimisation allowance); family-wise z false-failure rate 1e-3 over 3 means.
    x, y, target = bayesian_linear_regression(n=30, d=2, prior_scale=1.0, noise=0.5, **tkwargs)
    post = SVI(guide="mvn", num_steps=3000, lr=0.02, final_lr=0.0005, num_samples=4000,
               seed=0).fit(_model(**tkwargs), x, y, progress=False)
    draws = torch.cat([post["weight"].flatten(2), post["bias"]], -1)[0]
    assert draws.shape == (4000, 3)
    sd = target.cov.diagonal().sqrt()
    zc = z_critical(3)
    err = (draws.mean(0) - target.mean).abs()
    assert bool((err < zc * sd / 4000**0.5 + 0.05 * sd).all()), (err / sd).tolist()
    cov = torch.cov(draws.T)
    rel = (cov - target.cov).norm() / target.cov.norm()
    assert float(rel) < 0.10, float(rel)
    assert post.stats["elbo"].shape == (3000,)
    # The ELBO improves: last tenth above the first tenth.
    assert post.stats["elbo"][-300:].mean() > post.stats["elbo"][:300].mean()


@pytest.mark.parametrize("guide", ["normal", "lowrank", "delta"])
def test_guides_run_and_shape(guide, tkwargs):
    x, y, _ = bayesian_linear_regression(n=20, d=2, **tkwargs)
    post = SVI(guide=guide, num_steps=50, num_samples=30, rank=1, seed=0).fit(_model(**tkwargs), x, y,
                                                                              progress=False)
    expected = 1 if guide == "delta" else 30
    assert post["weight"].shape == (1, expected, 1, 2)
    assert torch.isfinite(post["weight"]).all()


def test_fits_do_not_share_parameters(tkwargs):
    # Guides use module-local parameters: a second fit starts fresh, not from the first's
    # values in Pyro's global param store.
    x, y, _ = bayesian_linear_regression(n=20, d=2, **tkwargs)
    engine = SVI(guide="normal", num_steps=100, num_samples=10, seed=3)
    a = engine.fit(_model(**tkwargs), x, y, progress=False)
    b = engine.fit(_model(**tkwargs), x, y, progress=False)
    assert torch.equal(a["weight"], b["weight"])
    assert torch.equal(a.stats["elbo"], b.stats["elbo"])


@pytest.mark.parametrize(("kwargs", "word"), [({"guide": "bogus"}, "guide"), ({"num_steps": 0}, "num_steps"),
                                              ({"lr": 0}, "lr"), ({"final_lr": 1.0}, "final_lr")])
def test_bad_settings(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SVI(**kwargs)
