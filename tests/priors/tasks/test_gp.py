"""GP task priors: draws have the GP's covariance, hyperparameters follow their hyperpriors,
the exact predictive agrees with a direct computation."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch
from scenarios import z_critical

from priors.tasks import GPHyperPrior, GPPrior, prior_from_config
from priors.tasks.gp import gp_predictive, kernel_matrix


def _gen(device: torch.device, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def test_shapes_reproducibility_and_feature_counts(tkwargs: dict) -> None:
    prior = GPHyperPrior(max_features=4, min_features=2).to(**tkwargs)
    x, y = prior.sample(8, 12, generator=_gen(tkwargs["device"]))
    assert x.shape[:2] == (8, 12) and 2 <= x.shape[2] <= 4 and y.shape == (8, 12)
    assert x.dtype == y.dtype == tkwargs["dtype"] and x.device.type == tkwargs["device"].type
    assert bool(((x >= 0) & (x <= 1)).all())
    x2, y2 = prior.sample(8, 12, generator=_gen(tkwargs["device"]))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    counts = {prior.sample(1, 2, generator=_gen(tkwargs["device"], s))[0].shape[2] for s in range(40)}
    assert counts == {2, 3, 4}


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_fixed_gp_draws_whiten_to_standard_normal(kernel: str, tkwargs: dict) -> None:
    """Whitening each draw with GPyTorch's covariance gives i.i.d. N(0, 1): E[z^2] = 1, Var[z^2] = 2."""
    prior = GPPrior(max_features=2, lengthscale=0.4, outputscale=1.7, noise=0.05, kernel=kernel).to(**tkwargs)
    x, y = prior.sample(64, 30, num_features=2, generator=_gen(tkwargs["device"]))
    base = gpytorch.kernels.RBFKernel() if kernel == "rbf" else gpytorch.kernels.MaternKernel(nu=2.5)
    k = gpytorch.kernels.ScaleKernel(base).to(**tkwargs)
    k.base_kernel.lengthscale, k.outputscale = 0.4, 1.7
    with torch.no_grad():
        cov = k(x).to_dense() + 0.05 * torch.eye(30, **tkwargs)
    z = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), y.unsqueeze(-1), upper=False).flatten()
    n = z.numel()
    # Two-sided z-tests on mean(z) and mean(z^2); Bonferroni over 2 tests x 2 kernels at total alpha 1e-4.
    crit = z_critical(4, 1e-4)
    assert abs(float(z.mean())) / math.sqrt(1 / n) < crit
    assert abs(float((z * z).mean()) - 1) / math.sqrt(2 / n) < crit


def test_hyperparameters_follow_hyperpriors(tkwargs: dict) -> None:
    prior = GPHyperPrior(max_features=3, noise_prior=(2.0, 20.0), min_noise=0.0).to(**tkwargs)
    h = prior.hyperparameters(4000, 3, _gen(tkwargs["device"]))
    assert h["lengthscale"].shape == (4000, 3) and h["outputscale"].shape == (4000,) and h["noise"].shape == (4000,)
    crit = z_critical(3, 1e-4)  # Bonferroni over 3 mean tests, false-failure rate 1e-4
    for key, (a, b) in (("lengthscale", (3.0, 6.0)), ("outputscale", (2.0, 0.15)), ("noise", (2.0, 20.0))):
        draws = h[key].flatten()
        assert abs(float(draws.mean()) - a / b) / math.sqrt(a / b**2 / draws.numel()) < crit, key
    floored = GPHyperPrior(min_noise=1e-4).hyperparameters(100, 1, _gen(tkwargs["device"]))["noise"]
    assert bool((floored >= 1e-4).all())  # the paper's Gamma(1e-4, 1) noise sits on the floor


def test_gp_predictive_matches_direct_formula(tkwargs: dict) -> None:
    """GPyTorch-kernel predictive == the sampler's own kernel in the textbook formula."""
    g = _gen(tkwargs["device"])
    tx, sx = torch.rand(3, 7, 2, generator=g, **tkwargs), torch.rand(3, 4, 2, generator=g, **tkwargs)
    ty = torch.randn(3, 7, generator=g, **tkwargs)
    ls = torch.tensor([[0.3, 0.7], [0.5, 0.5], [1.0, 0.2]], **tkwargs)
    os_, noise = torch.tensor([1.0, 2.0, 0.5], **tkwargs), torch.tensor([0.01, 0.1, 0.2], **tkwargs)
    for kernel in ("matern52", "rbf"):
        mean, var = gp_predictive(tx, ty, sx, ls, os_, noise, kernel)
        knn = kernel_matrix(tx, tx, ls, os_, kernel) + noise[:, None, None] * torch.eye(7, **tkwargs)
        kmn = kernel_matrix(sx, tx, ls, os_, kernel)
        sol = torch.linalg.solve(knn, kmn.transpose(-1, -2))
        torch.testing.assert_close(mean, (sol.transpose(-1, -2) @ ty.unsqueeze(-1)).squeeze(-1))
        torch.testing.assert_close(var, os_[:, None] - (kmn * sol.transpose(-1, -2)).sum(-1) + noise[:, None])


def test_config_roundtrip_and_bad_input() -> None:
    prior = GPHyperPrior(max_features=3, lengthscale_prior=(2.0, 4.0))
    again = prior_from_config(prior.config())
    assert isinstance(again, GPHyperPrior) and again.settings() == prior.settings()
    assert prior_from_config(GPPrior().config()).settings() == GPPrior().settings()
    with pytest.raises(ValueError, match="num_features"):
        prior.sample(2, 3, num_features=4)
    with pytest.raises(ValueError, match="kernel"):
        GPPrior(kernel="periodic")
    with pytest.raises(TypeError, match="lengthscale_prior"):
        GPHyperPrior(lengthscale_prior=3.0)
    with pytest.raises(ValueError, match="min_features"):
        GPPrior(max_features=2, min_features=3)
    with pytest.raises(ValueError, match="unknown task prior"):
        prior_from_config({"class": "Nope"})
