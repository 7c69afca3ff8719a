"""NUTS and HMC through Pyro: exactness on conjugate targets, stats, seeding, bad settings."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from scenarios import assert_moments_match, bayesian_linear_regression, conjugate_gaussian_mean
from torch import nn

from bayesnets import BayesianNet, Gaussian
from inference import HMC, NUTS
from priors import IIDGaussian


def _linear_model(d: int, noise: float, prior_scale: float, **tkwargs) -> BayesianNet:
    net = nn.Linear(d, 1).to(**tkwargs)
    return BayesianNet(net, IIDGaussian(prior_scale), Gaussian(scale=noise))


def _coefficients(post) -> torch.Tensor:
    """``[chain, draw, d + 1]``: weights then bias."""
    return torch.cat([post["weight"].flatten(2), post["bias"]], -1)


def test_nuts_matches_conjugate_linear_regression(tkwargs):
    # Family-wise false-failure rate 1e-3 over the 3 means and 6 covariance entries.
    x, y, target = bayesian_linear_regression(n=30, d=2, prior_scale=1.0, noise=0.5, **tkwargs)
    model = _linear_model(2, 0.5, 1.0, **tkwargs)
    post = NUTS(num_warmup=300, num_samples=800, num_chains=2, seed=1).fit(model, x, y, progress=False)
    assert post.samples["weight"].shape == (2, 800, 1, 2)
    assert post["weight"].dtype == torch.float64
    assert_moments_match(_coefficients(post), target)
    for key in ("diverging", "acceptance_rate", "step_size", "n_steps", "tree_depth", "lp"):
        assert post.stats[key].shape == (2, 800), key
    assert not post.stats["diverging"].any()
    assert 0.5 < float(post.stats["acceptance_rate"].mean()) <= 1.0


def test_hmc_matches_conjugate_linear_regression(tkwargs):
    # Family-wise false-failure rate 1e-3 over the 3 means and 6 covariance entries.
    x, y, target = bayesian_linear_regression(n=30, d=2, prior_scale=1.0, noise=0.5, **tkwargs)
    model = _linear_model(2, 0.5, 1.0, **tkwargs)
    post = HMC(num_warmup=300, num_samples=800, num_chains=2, trajectory_length=1.5, seed=2).fit(
        model, x, y, progress=False)
    assert_moments_match(_coefficients(post), target)
    assert "tree_depth" not in post.stats


def test_nuts_on_a_plain_pyro_model(tkwargs):
    # A model without log_density goes through Pyro's tracing; 2 z-tests at rate 1e-3.
    y, target = conjugate_gaussian_mean(n=20, prior_scale=2.0, noise=1.0, **tkwargs)
    x = torch.zeros(20, 1, **tkwargs)

    def model(x, y=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), **tkwargs), 2.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    post = NUTS(num_warmup=200, num_samples=600, num_chains=2, seed=3).fit(model, x, y, progress=False)
    assert post["mu"].shape == (2, 600)
    assert_moments_match(post["mu"].unsqueeze(-1), target)
    ll = post.log_likelihood()
    assert ll.shape == (2, 600, 20)


def test_same_seed_same_draws_and_chains_differ(tkwargs):
    x, y, _ = bayesian_linear_regression(n=10, d=1, **tkwargs)
    model = _linear_model(1, 0.5, 1.0, **tkwargs)
    engine = NUTS(num_warmup=30, num_samples=20, num_chains=2, seed=7)
    a = engine.fit(model, x, y, progress=False)
    b = engine.fit(model, x, y, progress=False)
    assert torch.equal(a["weight"], b["weight"])
    assert not torch.equal(a["weight"][0], a["weight"][1])


def test_seed_none_follows_torch_seed(tkwargs):
    x, y, _ = bayesian_linear_regression(n=10, d=1, **tkwargs)
    model = _linear_model(1, 0.5, 1.0, **tkwargs)
    torch.manual_seed(5)
    a = NUTS(num_warmup=10, num_samples=5, num_chains=1).fit(model, x, y, progress=False)
    torch.manual_seed(5)
    b = NUTS(num_warmup=10, num_samples=5, num_chains=1).fit(model, x, y, progress=False)
    assert torch.equal(a["weight"], b["weight"])


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"num_samples": 0}, "num_samples"), ({"num_chains": 0}, "num_chains"),
     ({"num_warmup": -1}, "num_warmup"), ({"target_accept": 1.0}, "target_accept"),
     ({"max_tree_depth": 0}, "max_tree_depth"), ({"step_size": -1.0}, "step_size"),
     ({"init": "random"}, "init")],
)
def test_bad_settings(kwargs, word):
    with pytest.raises(ValueError, match=word):
        NUTS(**kwargs)


def test_divergences_are_reported(tkwargs):
    # A huge fixed step size with no adaptation diverges: the engine must count and warn.
    x, y, _ = bayesian_linear_regression(n=30, d=1, noise=0.05, **tkwargs)
    model = _linear_model(1, 0.05, 1.0, **tkwargs)
    engine = NUTS(num_warmup=0, num_samples=10, num_chains=1, step_size=5.0, adapt_step_size=False, seed=0)
    with pytest.warns(RuntimeWarning, match="divergent"):
        post = engine.fit(model, x, y, progress=False)
    assert int(post.stats["diverging"].sum()) > 0
