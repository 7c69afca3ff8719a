"""Deep kernel learning surrogate: an MLP feature map into a Matérn kernel, fitted by the exact MLL.

Wilson, Hu, Salakhutdinov & Xing (arXiv 1511.02222) introduced deep kernel learning; Li, Rudner &
Wilson (arXiv 2305.20028) found it "relatively competitive" with fully stochastic BNNs for BO. As
in their ``DKLGP``: a tanh MLP, a ``ScaleKernel(Matérn-5/2 ARD)`` on its features with their
Gamma(3, 6) lengthscale and Gamma(2, 0.15) outputscale priors, the network and the GP
hyperparameters trained together on the exact marginal likelihood. It is a ``SingleTaskGP``, so
fantasies and ``condition_on_observations`` work (the paper's wrapper implemented none).
"""

from __future__ import annotations

from typing import Any

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import OutcomeTransform, Standardize
from botorch.optim.closures import get_loss_closure_with_grads
from gpytorch.kernels import Kernel, MaternKernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior
from torch import Tensor, nn

from bayesnets.surrogates.bnn import mlp
from bayesnets.surrogates.data import check_train_data
from inference.seeding import seeded

__all__ = ["DKLSurrogate", "FeatureKernel"]

#: Feature extractor: 2 tanh layers of 32 units (the paper used 128 x 3 with 1000-5000 Adam steps;
#: a smaller net is fitted by L-BFGS in seconds and overfits less on 10-100 points).
DKL_WIDTH, DKL_DEPTH = 32, 2
#: L-BFGS iterations of the joint fit (~1.5k network weights): a cap, since running scipy's
#: L-BFGS to convergence cost tens of seconds per fit for no better held-out fit (docs/surrogates.md).
DKL_MAXITER = 200
#: At most this many learned features (the kernel's input dimension).
MAX_FEATURES = 4
#: The paper's priors (models/dkl.py): lengthscale Gamma(3, 6), outputscale Gamma(2, 0.15).
LENGTHSCALE_PRIOR, OUTPUTSCALE_PRIOR = (3.0, 6.0), (2.0, 0.15)


class FeatureKernel(Kernel):
    """``k(x, x') = base(g(x), g(x'))`` for a network ``g`` acting on the last dimension."""

    def __init__(self, extractor: nn.Module, base: Kernel, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extractor = extractor
        self.base = base

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params: Any) -> Tensor:
        z1 = self.extractor(x1)
        z2 = z1 if x2 is x1 else self.extractor(x2)
        return self.base.forward(z1, z2, diag=diag, **params)


class DKLSurrogate(SingleTaskGP):
    """``SingleTaskGP`` with a deep kernel; ``fantasize``/``condition_on_observations`` work.

    Args:
        train_X: ``[n, d]`` inputs; train_Y: ``[n, m]`` raw outcomes (``m > 1``: one shared
            feature network, per-output kernel hyperparameters).
        width, depth: the feature network's hidden layers.
        num_features: learned features (default ``min(d, MAX_FEATURES)``).
        input_transform: optional, e.g. ``Normalize(d)``.
        outcome_transform: default ``Standardize(m)``.
        fit: fit network and hyperparameters now (``fit_gpytorch_mll``, L-BFGS on all of them).
        seed: seeds the network's initial weights and the fit.
    """

    def __init__(self, train_X: Tensor, train_Y: Tensor, width: int = DKL_WIDTH, depth: int = DKL_DEPTH,
                 num_features: int | None = None, input_transform: InputTransform | None = None,
                 outcome_transform: OutcomeTransform | None = None, fit: bool = True, seed: int = 0) -> None:
        check_train_data(train_X, train_Y)
        d, m = train_X.shape[-1], train_Y.shape[-1]
        k = min(d, MAX_FEATURES) if num_features is None else int(num_features)
        if k < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        batch = torch.Size([m]) if m > 1 else torch.Size([])
        with seeded(seed, train_X):
            extractor = mlp(d, k, width, depth, "tanh")
            base = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=k, batch_shape=batch,
                                            lengthscale_prior=GammaPrior(*LENGTHSCALE_PRIOR)),
                               batch_shape=batch, outputscale_prior=GammaPrior(*OUTPUTSCALE_PRIOR))
            kernel = FeatureKernel(extractor, base).to(train_X)
            super().__init__(train_X, train_Y, covar_module=kernel, input_transform=input_transform,
                             outcome_transform=Standardize(m=m) if outcome_transform is None else outcome_transform)
            if fit:
                mll = ExactMarginalLogLikelihood(self.likelihood, self).train()
                params = {n: p for n, p in mll.named_parameters() if p.requires_grad}
                # An explicit closure keeps BoTorch from splitting a multi-output fit into
                # independent batch problems: the feature network is shared by the outputs.
                fit_gpytorch_mll(mll, closure=get_loss_closure_with_grads(mll, params),
                                 optimizer_kwargs={"options": {"maxiter": DKL_MAXITER}})
        self.eval()
