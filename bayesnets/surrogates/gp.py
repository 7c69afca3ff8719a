"""The baseline surrogate: BoTorch's ``SingleTaskGP`` fitted by type-II maximum likelihood."""

from __future__ import annotations

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import (
    get_gaussian_likelihood_with_gamma_prior,
    get_matern_kernel_with_gamma_prior,
)
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from bayesnets.surrogates.data import check_train_data
from inference.seeding import seeded

__all__ = ["fit_legacy_gp", "fit_single_task_gp"]


def fit_single_task_gp(train_X: Tensor, train_Y: Tensor, *, seed: int = 0) -> SingleTaskGP:
    """BoTorch's default GP, hyperparameters by ``fit_gpytorch_mll``; the baseline of arXiv 2305.20028.

    Since BoTorch 0.12 the default is an RBF ARD kernel whose log-normal lengthscale prior grows
    with ``sqrt(d)``, and a log-normal noise prior (Hvarfner et al., arXiv 2402.02229); the paper
    ran BoTorch 0.8.5, whose default was a scaled Matérn-5/2 ARD kernel with Gamma(3, 6)
    lengthscale and Gamma(2, 0.15) output-scale priors — a much weaker GP in high dimensions.

    Args:
        train_X: ``[n, d]`` inputs in the unit cube.
        train_Y: ``[n, m]`` raw outcomes; ``m > 1`` gives a batched multi-output GP.
        seed: seeds the optimiser's random restarts.
    """
    return _fit(train_X, train_Y, seed)


def fit_legacy_gp(train_X: Tensor, train_Y: Tensor, *, seed: int = 0) -> SingleTaskGP:
    """``SingleTaskGP`` with BoTorch's defaults before 0.12, those of the paper's runs (BoTorch 0.8.5):
    ``ScaleKernel(Matérn-5/2 ARD)`` with Gamma(3, 6) lengthscale and Gamma(2, 0.15) output-scale
    priors, Gamma(1.1, 0.05) noise prior. For reproducing arXiv 2305.20028's GP baseline: in
    200 dimensions these priors put the lengthscales near 0.3 in the unit cube, where the GP
    barely correlates any two points (docs/bo.md measures what that does to BO).

    Args:
        train_X: ``[n, d]`` inputs in the unit cube.
        train_Y: ``[n, m]`` raw outcomes; ``m > 1`` gives a batched multi-output GP.
        seed: seeds the optimiser's random restarts.
    """
    check_train_data(train_X, train_Y)
    m = train_Y.shape[-1]
    batch = torch.Size([m]) if m > 1 else torch.Size([])
    return _fit(train_X, train_Y, seed,
                covar_module=get_matern_kernel_with_gamma_prior(train_X.shape[-1], batch_shape=batch),
                likelihood=get_gaussian_likelihood_with_gamma_prior(batch_shape=batch))


def _fit(train_X: Tensor, train_Y: Tensor, seed: int, **modules: object) -> SingleTaskGP:
    check_train_data(train_X, train_Y)
    with seeded(seed, train_X):
        model = SingleTaskGP(train_X, train_Y, outcome_transform=Standardize(m=train_Y.shape[-1]), **modules)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model.eval()
