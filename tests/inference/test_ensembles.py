"""Deep ensembles: each member is the exact MAP / ML fit on its own random subset; shapes,
stats, seeding, minibatches, generic Pyro models and bad settings."""

from __future__ import annotations

import functools

import pyro
import pyro.distributions as dist
import pytest
import torch
from scenarios import bayesian_linear_regression
from torch import nn

from bayesnets import BayesianNet, Gaussian
from inference.ensembles import DeepEnsemble
from priors import IIDGaussian

N, NOISE, PRIOR = 30, 0.5, 1.0


def _problem(**tkwargs):
    x, y, _ = bayesian_linear_regression(n=N, d=2, prior_scale=PRIOR, noise=NOISE, **tkwargs)
    model = BayesianNet(nn.Linear(2, 1).to(**tkwargs), IIDGaussian(PRIOR), Gaussian(scale=NOISE))
    return x, y, model


def _closed_form(x, y, rows, ridge: float):
    """Ridge / least-squares solution ``[w_1, w_2, b]`` on ``rows``."""
    xa = torch.cat([x[rows], torch.ones(len(rows), 1, dtype=x.dtype, device=x.device)], 1)
    a = xa.T @ xa / NOISE**2 + ridge * torch.eye(3, dtype=x.dtype, device=x.device)
    return torch.linalg.solve(a, xa.T @ y[rows] / NOISE**2)


def _members(post):
    return torch.cat([post["weight"][0].flatten(1), post["bias"][0]], -1)


@pytest.mark.parametrize(("objective", "ridge"), [("map", 1 / PRIOR**2), ("ml", 0.0)])
def test_members_are_exact_fits_on_their_subsets(tkwargs, objective, ridge):
    # Linear-Gaussian: each member's objective is quadratic, so full-batch SGD converges
    # geometrically (rate < 0.7 per epoch here) to the closed-form ridge (MAP) or
    # least-squares (ML) solution on that member's 80% subset.
    x, y, model = _problem(**tkwargs)
    post = DeepEnsemble(num_members=4, optimizer="sgd", lr=0.1, num_epochs=300, objective=objective, seed=0).fit(
        model, x, y, progress=False)
    subsets = post.stats["subsets"][0]
    assert subsets.shape == (4, 24)  # round(0.8 * 30)
    for m in range(4):
        assert len(set(subsets[m].tolist())) == 24  # without replacement
        torch.testing.assert_close(_members(post)[m], _closed_form(x, y, subsets[m], ridge), rtol=0, atol=1e-8)
    assert not torch.equal(subsets[0], subsets[1])
    loss = post.stats["loss"][0]
    assert loss.shape == (4, 300) and bool((loss[:, -1] <= loss[:, 0]).all())


def test_ensemble_posterior_has_members_as_draws(tkwargs, tmp_path):
    x, y, model = _problem(**tkwargs)
    opt = functools.partial(torch.optim.Adam, lr=0.05)
    post = DeepEnsemble(num_members=5, optimizer=opt, num_epochs=50, seed=1).fit(model, x, y, progress=False)
    assert post.num_chains == 1 and post.num_draws == 5
    assert post["weight"].shape == (1, 5, 1, 2) and post["weight"].device == x.device
    assert post.stats["lp"].shape == (1, 5)
    assert post.predict(x).f.shape == (1, 5, N, 1)
    assert post.log_likelihood().shape == (1, 5, N)
    post.to_arviz()
    post.save(tmp_path / "ens.safetensors")
    back = type(post).load(tmp_path / "ens.safetensors", model=model, device=x.device)
    assert torch.equal(back.stats["subsets"], post.stats["subsets"])
    # Same seed, same members; another seed, other members.
    again = DeepEnsemble(num_members=5, optimizer=opt, num_epochs=50, seed=1).fit(model, x, y, progress=False)
    assert torch.equal(again["weight"], post["weight"])
    other = DeepEnsemble(num_members=5, optimizer=opt, num_epochs=50, seed=2).fit(model, x, y, progress=False)
    assert not torch.equal(other["weight"], post["weight"])


def test_minibatch_members_approach_the_same_fits(tkwargs):
    # Minibatches of 8 out of each 24-row subset: constant-rate Adam hovers within O(lr) of
    # the optimum, so this checks the minibatch plumbing (rescaling to the subset, the
    # member's own rows) to 0.05, not convergence.
    x, y, model = _problem(**tkwargs)
    post = DeepEnsemble(num_members=3, lr=0.01, num_epochs=150, batch_size=8, seed=3).fit(model, x, y, progress=False)
    subsets = post.stats["subsets"][0]
    for m in range(3):
        torch.testing.assert_close(_members(post)[m], _closed_form(x, y, subsets[m], 1.0), rtol=0, atol=0.05)


def test_ensemble_of_a_pyro_model(tkwargs):
    # Gaussian mean, prior N(0, 2^2), noise 1: each member's MAP is the conjugate posterior
    # mean of its subset (full batch; the plate is not subsampled).
    y = 1.0 + torch.randn(20, **tkwargs)
    x = torch.zeros(20, 1, **tkwargs)

    def model(x, y=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), **tkwargs), 2.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    post = DeepEnsemble(num_members=3, optimizer="sgd", lr=0.5, num_epochs=100, bootstrap_fraction=0.5, seed=0).fit(
        model, x, y, progress=False)
    for m in range(3):
        rows = post.stats["subsets"][0, m]
        exact = y[rows].sum() / (len(rows) + 0.25)
        torch.testing.assert_close(post["mu"][0, m], exact, rtol=0, atol=1e-8)


def test_bad_settings(tkwargs):
    x, y, model = _problem(**tkwargs)
    with pytest.raises(ValueError, match="bootstrap_fraction"):
        DeepEnsemble(bootstrap_fraction=0.0)
    with pytest.raises(ValueError, match="bootstrap_fraction"):
        DeepEnsemble(bootstrap_fraction=1.5)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        DeepEnsemble(optimizer="newton")
    with pytest.raises(ValueError, match="objective"):
        DeepEnsemble(objective="elbo")
    with pytest.raises(ValueError, match="num_members"):
        DeepEnsemble(num_members=0)
    with pytest.raises(ValueError, match="LBFGS"):
        DeepEnsemble(optimizer=torch.optim.LBFGS, num_epochs=1).fit(model, x, y, progress=False)
    with pytest.raises(ValueError, match="subset size"):
        DeepEnsemble(batch_size=25, num_epochs=1).fit(model, x, y, progress=False)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        DeepEnsemble(num_epochs=1).fit(model, torch.utils.data.DataLoader(list(zip(x, y))), progress=False)
