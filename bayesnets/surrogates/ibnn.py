"""I-BNN surrogate: a GP with the infinite-width ReLU network kernel, its variances learned.

Li, Rudner & Wilson (arXiv 2305.20028) found the infinite-width BNN (Lee et al., arXiv 1711.00165)
"particularly promising, especially in high dimensions", with ``σ_w²``, ``σ_b²`` and the depth
fixed per problem (depth 3, ``σ_w² = 10``, ``σ_b² = 1.3``) and only the noise and mean fitted.
Here ``σ_w²`` and ``σ_b²`` of :class:`~priors.kernels.NNGPKernel` are fitted with them by the
exact marginal likelihood, starting from the paper's values. No ``ScaleKernel``: the ReLU
recursion is homogeneous, so scaling ``(σ_w², σ_b²)`` by ``c`` scales the kernel by
``c^(depth+1)`` and an output scale would be redundant.
"""

from __future__ import annotations

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import OutcomeTransform, Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from bayesnets.surrogates.data import check_train_data
from inference.seeding import seeded
from priors.kernels import NNGPKernel

__all__ = ["IBNNSurrogate"]

#: The paper's I-BNN configuration (its config files: depth 3, var_w 10, var_b 1.3).
PAPER_DEPTH, PAPER_WEIGHT_VARIANCE, PAPER_BIAS_VARIANCE = 3, 10.0, 1.3


class IBNNSurrogate(SingleTaskGP):
    """``SingleTaskGP`` with the ReLU NNGP kernel; ``fantasize``/``condition_on_observations`` work.

    Args:
        train_X: ``[n, d]`` inputs; train_Y: ``[n, m]`` raw outcomes (``m > 1``: one kernel per
            output, a batched GP).
        depth: hidden layers of the infinitely wide network.
        weight_variance, bias_variance: starting ``σ_w²``, ``σ_b²``.
        learn_variances: fit them (``False`` reproduces the paper's fixed kernel).
        input_transform: optional, e.g. ``Normalize(d)``.
        outcome_transform: default ``Standardize(m)``.
        fit: fit the hyperparameters now (``fit_gpytorch_mll``).
        seed: seeds the fit's random restarts.
    """

    def __init__(self, train_X: Tensor, train_Y: Tensor, depth: int = PAPER_DEPTH,
                 weight_variance: float = PAPER_WEIGHT_VARIANCE, bias_variance: float = PAPER_BIAS_VARIANCE,
                 learn_variances: bool = True, input_transform: InputTransform | None = None,
                 outcome_transform: OutcomeTransform | None = None, fit: bool = True, seed: int = 0) -> None:
        check_train_data(train_X, train_Y)
        m = train_Y.shape[-1]
        kernel = NNGPKernel(depth=depth, activation="relu", weight_variance=weight_variance,
                            bias_variance=bias_variance, batch_shape=torch.Size([m]) if m > 1 else torch.Size([]))
        kernel.raw_weight_variance.requires_grad_(learn_variances)
        kernel.raw_bias_variance.requires_grad_(learn_variances)
        super().__init__(train_X, train_Y, covar_module=kernel.to(train_X),
                         input_transform=input_transform,
                         outcome_transform=Standardize(m=m) if outcome_transform is None else outcome_transform)
        if fit:
            with seeded(seed, train_X):
                fit_gpytorch_mll(ExactMarginalLogLikelihood(self.likelihood, self))
        self.eval()
