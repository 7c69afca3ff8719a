"""Sparse variational t-process classifier: KL against Monte Carlo, prior initialisation, training, bad input."""

from __future__ import annotations

import pytest
import torch
from scenarios import z_critical
from sklearn.datasets import load_iris
from torch.distributions import MultivariateNormal

from bayesnets.tprocess.classification import (
    SparseTProcessClassifier,
    SparseTProcessTrainer,
    fit_classifier,
    inducing_points_by_class,
)
from priors.kernels import NNGPKernel
from priors.processes import InverseGamma


def _iris(tkwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_iris()
    X = torch.tensor(data.data, **tkwargs)
    return (X - X.mean(0)) / X.std(0), torch.tensor(data.target, device=tkwargs["device"])


def _randomised(tkwargs: dict) -> SparseTProcessClassifier:
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(5, 2, generator=g, dtype=torch.float64).to(**tkwargs)
    model = SparseTProcessClassifier(Z, 3, kernel=NNGPKernel(depth=2).to(**tkwargs), alpha=2.0, beta=1.5)
    with torch.no_grad():  # a posterior far from the prior, so that every KL term matters
        model.q_mu.copy_(torch.randn(3, 5, generator=g, dtype=torch.float64))
        model.q_tril.add_(0.3 * torch.randn(3, 5, 5, generator=g, dtype=torch.float64).to(**tkwargs))
        model.q_log_diag.add_(0.2)
        model.q_log_a.fill_(1.6)
        model.q_log_b.fill_(0.4)
    return model


def test_kl_matches_monte_carlo(tkwargs: dict) -> None:
    """Closed-form KL(q(u, σ²) ‖ p(u, σ²)) against mean(log q - log p) over 20000 draws (z-test, rate 1e-3)."""
    model = _randomised(tkwargs)
    with torch.no_grad():
        kl = model.kl_divergence()
        L = model._kuu_cholesky()
        q_scale, p_scale = model.scale_posterior(), InverseGamma(model.prior_alpha, model.prior_beta)
        sigma2 = q_scale.sample(torch.Size([20000]))  # [S]
        root = sigma2.sqrt()[:, None, None, None]
        q_u = MultivariateNormal(model.q_mu, scale_tril=model.q_scale_tril)  # unit scale: [C] batch
        u = model.q_mu + (root * (model.q_scale_tril @ torch.randn(20000, 3, 5, 1, **tkwargs))).squeeze(-1)
        m = model.q_mu.shape[-1]
        # log N(u; m, σ² S) = log N(u/σ; m/σ, S) - M log σ, and likewise for the prior
        scaled = u / sigma2.sqrt()[:, None, None]
        log_q = (q_scale.log_prob(sigma2)
                 + (MultivariateNormal(model.q_mu / sigma2.sqrt()[:, None, None], scale_tril=q_u.scale_tril)
                    .log_prob(scaled) - m * sigma2.sqrt().log()[:, None]).sum(-1))
        p_u = MultivariateNormal(torch.zeros(5, **tkwargs), scale_tril=L)
        log_p = p_scale.log_prob(sigma2) + (p_u.log_prob(scaled) - m * sigma2.sqrt().log()[:, None]).sum(-1)
        diff = log_q - log_p
    z = (diff.mean() - kl).abs() / (diff.std() / 20000**0.5)
    assert z.item() < z_critical(1)


def test_initial_q_equals_the_prior(tkwargs: dict) -> None:
    """At initialisation q(u | σ²) = p(u | σ²): q(f(x) | σ²) has location 0 and unit-scale variance k(x, x)."""
    X, y = _iris(tkwargs)
    model = SparseTProcessClassifier(inducing_points_by_class(X, y, 9), 3)
    loc, var = model.latent_marginals(X[:20])
    assert loc.abs().max().item() == 0.0
    k_xx = model.kernel(X[:20], diag=True).detach()
    torch.testing.assert_close(var.detach(), k_xx.expand(3, 20), rtol=1e-6, atol=1e-8)
    assert model.kl_divergence().item() == pytest.approx(0.0, abs=1e-6)  # q(σ²) starts at the prior too


@pytest.mark.parametrize("alpha", [2.0, None])
def test_training_on_iris(alpha: float | None, tkwargs: dict) -> None:
    X, y = _iris(tkwargs)
    model = SparseTProcessClassifier(inducing_points_by_class(X, y, 12), 3, alpha=alpha, beta=alpha)
    fit = fit_classifier(model, X, y, num_steps=150, lr=0.03, batch_size=64)
    elbo = fit.history["elbo"]
    assert fit.module is model and torch.equal(fit.history["loss"], -elbo)
    assert elbo[-10:].mean() > elbo[:10].mean() + 0.3
    probs = model.predict_proba(X)
    torch.testing.assert_close(probs.sum(-1), torch.ones(150, **tkwargs))
    # iris is easy: a linear model gets ~0.97; 0.9 leaves room for 150 noisy Adam steps
    assert (probs.argmax(-1) == y).double().mean().item() > 0.9
    assert model.predictive_nll(X, y).item() < 0.4


def test_bad_input_raises(tkwargs: dict) -> None:
    X, y = _iris(tkwargs)
    Z = X[:6]
    with pytest.raises(ValueError, match="num_classes"):
        SparseTProcessClassifier(Z, 1)
    with pytest.raises(ValueError, match="both be numbers"):
        SparseTProcessClassifier(Z, 3, alpha=2.0, beta=None)
    with pytest.raises(ValueError, match="alpha must be"):
        SparseTProcessClassifier(Z, 3, alpha=0.0, beta=1.0)
    with pytest.raises(ValueError, match=r"inducing_points must be a \[M, d\]"):
        SparseTProcessClassifier(Z[0], 3)
    model = SparseTProcessClassifier(Z, 3)
    with pytest.raises(ValueError, match="integer tensor"):
        model.elbo(X, y.double())
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 2\]"):
        model.elbo(X, y + 1)
    with pytest.raises(ValueError, match="d = 4"):
        model.predict_proba(X[:, :3])
    with pytest.raises(ValueError, match="num_steps"):
        fit_classifier(model, X, y, num_steps=0)
    with pytest.raises(ValueError, match=r"X must be a \[B, d\] tensor with d = 4"):
        fit_classifier(model, X[:, :3], y)
    with pytest.raises(TypeError, match=r"data must be \(X, y\)"):
        SparseTProcessTrainer(num_steps=2).fit(model, X)


def test_trainer_is_fit_classifier(tkwargs: dict) -> None:
    """The wrapper is the trainer: same seed, same numbers; a batch of all rows is reshuffled every step."""
    X, y = _iris(tkwargs)
    runs = []
    for batch_size in (None, 150, 200):  # all rows, however asked for
        model = SparseTProcessClassifier(inducing_points_by_class(X, y, 6), 3)
        runs.append((model, fit_classifier(model, X, y, num_steps=5, batch_size=batch_size, seed=4)))
    model = SparseTProcessClassifier(inducing_points_by_class(X, y, 6), 3)
    fit = SparseTProcessTrainer(num_steps=5, seed=4).fit(model, (X, y), progress=False)
    for other, run in runs:
        assert torch.equal(run.history["elbo"], fit.history["elbo"])
        assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values()))
    assert fit.attrs["trainer"] == "SparseTProcessTrainer" and fit.attrs["num_data"] == 150
    assert not model.training
