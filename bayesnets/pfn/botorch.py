"""BoTorch interface for PFNs: :class:`PFNModel` (a ``botorch.models.model.Model``) and
:class:`PFNPosterior` (a ``botorch.posteriors.Posterior``), as in PFNs4BO (Müller et al.,
arXiv:2305.17535) on top of the PFN of arXiv:2112.10510.

Conditioning a PFN on data is one forward pass, so the model has no hyperparameters to fit.
The posterior is the PFN's posterior predictive of noisy observations ``y`` at each point;
points of a q-batch are predicted independently (the PFN gives marginals only), so joint
samples across a q-batch are independent draws from the marginals. Samples are
reparameterised through the inverse CDF of standard-normal base samples, so BoTorch's
quasi-MC samplers (``SobolQMCNormalSampler``, registered for :class:`PFNPosterior`) and
every MC acquisition function work, with gradients to ``X``.

Inputs should lie in the unit cube the PFN was trained on (normalise them as for any
BoTorch model). With ``standardize=True`` (default) targets are standardised before they
reach the PFN and predictions are mapped back exactly (a bar distribution is closed under
affine maps: transform its borders).
"""

from __future__ import annotations

from typing import Any

import torch
from botorch.models.model import Model
from botorch.posteriors import Posterior
from botorch.sampling.get_sampler import GetSampler
from botorch.sampling.normal import SobolQMCNormalSampler
from torch import Tensor

from bayesnets.pfn.bar import BarDistribution
from bayesnets.pfn.model import PFN

__all__ = ["PFNModel", "PFNPosterior"]

# Base samples are mapped through Phi; keep u strictly inside (0, 1) so tails stay finite.
_U_EPS = 1e-6


class PFNPosterior(Posterior):
    """Posterior of a one-output PFN model at ``X`` ``[*batch, q, d]``: event shape ``[*batch, q, 1]``.

    Args:
        distribution: a :class:`BarDistribution` with batch shape ``[*batch, q]``.
    """

    def __init__(self, distribution: BarDistribution) -> None:
        self.distribution = distribution

    @property
    def device(self) -> torch.device:
        return self.distribution.logits.device

    @property
    def dtype(self) -> torch.dtype:
        return self.distribution.logits.dtype

    @property
    def mean(self) -> Tensor:
        return self.distribution.mean.unsqueeze(-1)

    @property
    def variance(self) -> Tensor:
        return self.distribution.variance.unsqueeze(-1)

    def _extended_shape(self, sample_shape: torch.Size = torch.Size()) -> torch.Size:  # noqa: B008
        return torch.Size(sample_shape) + self.distribution.batch_shape + torch.Size([1])

    @property
    def base_sample_shape(self) -> torch.Size:
        return self.distribution.batch_shape + torch.Size([1])

    @property
    def batch_range(self) -> tuple[int, int]:
        return (0, -2)

    def rsample_from_base_samples(self, sample_shape: torch.Size, base_samples: Tensor) -> Tensor:
        """Samples ``[*sample_shape, *batch, q, 1]`` from standard-normal ``base_samples`` (inverse CDF)."""
        expected = self._extended_shape(sample_shape)
        if base_samples.shape != expected:
            raise ValueError(f"base_samples must have shape sample_shape + base_sample_shape = {tuple(expected)}, "
                             f"got {tuple(base_samples.shape)}")
        u = torch.special.ndtr(base_samples.to(self.dtype)).clamp(_U_EPS, 1 - _U_EPS)
        return self.distribution.icdf(u.squeeze(-1)).unsqueeze(-1)

    def rsample(self, sample_shape: torch.Size | None = None) -> Tensor:
        sample_shape = torch.Size([]) if sample_shape is None else torch.Size(sample_shape)
        base = torch.randn(sample_shape + self.base_sample_shape, dtype=self.dtype, device=self.device)
        return self.rsample_from_base_samples(sample_shape, base)

    def quantile(self, value: Tensor) -> Tensor:
        """Quantiles at probabilities ``value`` ``[k]``: ``[k, *batch, q, 1]``."""
        v = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        return self.distribution.icdf(v.reshape(-1, *([1] * len(self.distribution.batch_shape)))).unsqueeze(-1)

    def density(self, value: Tensor) -> Tensor:
        """Marginal densities at ``value`` ``[..., *batch, q, 1]``."""
        return self.distribution.log_prob(value.squeeze(-1)).exp().unsqueeze(-1)


@GetSampler.register(PFNPosterior)
def _get_sampler_pfn(posterior: PFNPosterior, sample_shape: torch.Size, *, seed: int | None = None
                     ) -> SobolQMCNormalSampler:
    """Quasi-MC normal base samples, mapped through the inverse CDF by the posterior."""
    return SobolQMCNormalSampler(sample_shape=sample_shape, seed=seed)


class PFNModel(Model):
    """A BoTorch model whose posterior is a PFN's prediction given ``(train_X, train_Y)``.

    Args:
        train_X: ``[n, d]`` inputs in the unit cube.
        train_Y: ``[n, 1]`` targets.
        pfn: a regression :class:`PFN`; default ``PFN.pretrained("gp")``.
        standardize: standardise ``train_Y`` for the PFN and un-standardise its predictions.
    """

    num_outputs = 1

    def __init__(self, train_X: Tensor, train_Y: Tensor, pfn: PFN | None = None, standardize: bool = True) -> None:
        super().__init__()
        if not isinstance(train_X, Tensor) or train_X.dim() != 2:
            raise ValueError(f"train_X must be a [n, d] tensor, got "
                             f"{tuple(train_X.shape) if isinstance(train_X, Tensor) else type(train_X).__name__}")
        if not isinstance(train_Y, Tensor) or train_Y.shape != (train_X.shape[0], 1):
            raise ValueError(f"train_Y must have shape [n, 1] = {[train_X.shape[0], 1]}, got "
                             f"{tuple(train_Y.shape) if isinstance(train_Y, Tensor) else type(train_Y).__name__}")
        self.pfn = PFN.pretrained("gp") if pfn is None else pfn
        if not self.pfn.regression:
            raise ValueError("PFNModel needs a regression PFN (bar-distribution head)")
        self.pfn.to(train_X.device)
        self.pfn.eval()
        self.standardize = bool(standardize)
        self.train_X, self.train_Y = train_X, train_Y
        y = train_Y.squeeze(-1)
        if self.standardize and y.numel() > 1:
            self.y_mean, self.y_std = y.mean(), y.std().clamp_min(1e-9)
        else:
            self.y_mean, self.y_std = torch.zeros((), dtype=y.dtype, device=y.device), torch.ones(
                (), dtype=y.dtype, device=y.device)
        self.pfn.predict(train_X, (y - self.y_mean) / self.y_std, train_X[:1])  # validates shapes and values now

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size([])

    def posterior(self, X: Tensor, output_indices: list[int] | None = None, observation_noise: bool | Tensor = False,
                  posterior_transform: Any = None, **kwargs: Any) -> Posterior:
        """PFN posterior predictive at ``X`` ``[*batch, q, d]`` (``observation_noise`` is ignored:
        a PFN trained on noisy targets always predicts observations)."""
        if output_indices not in (None, [0]):
            raise ValueError(f"PFNModel has one output; output_indices must be None or [0], got {output_indices}")
        if X.dim() < 2 or X.shape[-1] != self.train_X.shape[-1]:
            raise ValueError(f"X must have shape [..., q, d={self.train_X.shape[-1]}], got {tuple(X.shape)}")
        batch = X.shape[:-2]
        flat = X.reshape(-1, *X.shape[-2:])
        b = flat.shape[0]
        tx = self.train_X.to(flat).expand(b, *self.train_X.shape)
        ty = ((self.train_Y.squeeze(-1).to(flat) - self.y_mean) / self.y_std).expand(b, -1)
        logits = self.pfn(tx, ty, flat).to(flat.dtype)
        borders = self.pfn.borders.to(flat) * self.y_std + self.y_mean
        post = PFNPosterior(BarDistribution(logits.reshape(*batch, *logits.shape[-2:]), borders))
        if posterior_transform is not None:
            return posterior_transform(post)
        return post

    def condition_on_observations(self, X: Tensor, Y: Tensor, **kwargs: Any) -> PFNModel:
        """A new model with ``(X [m, d], Y [m, 1])`` appended to the training data (a PFN conditions
        by reading the data, so this is exact for it)."""
        if X.dim() != 2 or Y.dim() != 2:
            raise ValueError("condition_on_observations takes unbatched X [m, d] and Y [m, 1]")
        return PFNModel(torch.cat([self.train_X, X.to(self.train_X)]), torch.cat([self.train_Y, Y.to(self.train_Y)]),
                        pfn=self.pfn, standardize=self.standardize)
