"""The baseline surrogate: BoTorch's ``SingleTaskGP`` fitted by type-II maximum likelihood."""

from __future__ import annotations

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from bayesnets.surrogates.data import check_train_data

__all__ = ["fit_single_task_gp"]


def fit_single_task_gp(train_X: Tensor, train_Y: Tensor, *, seed: int = 0) -> SingleTaskGP:
    """BoTorch's default GP (Matérn-5/2 ARD with its default priors, ``Standardize`` outcomes),
    hyperparameters by ``fit_gpytorch_mll``; the baseline of arXiv 2305.20028.

    Args:
        train_X: ``[n, d]`` inputs in the unit cube.
        train_Y: ``[n, m]`` raw outcomes; ``m > 1`` gives a batched multi-output GP.
        seed: seeds the optimiser's random restarts.
    """
    check_train_data(train_X, train_Y)
    with torch.random.fork_rng(devices=[train_X.device] if train_X.device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = SingleTaskGP(train_X, train_Y, outcome_transform=Standardize(m=train_Y.shape[-1]))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model.eval()
