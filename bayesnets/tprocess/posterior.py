"""BoTorch posteriors of scale mixtures of Gaussians: the multivariate t and its relatives.

A :class:`ScaleMixturePosterior` is the law of ``f = loc + sqrt(σ²) L z`` at ``q`` points, with
``L Lᵀ`` a covariance, ``z ~ N(0, I_q)`` and one scale ``σ² ~ mixing`` shared by the q-batch:
the posterior predictive of a scale mixture of NNGPs (Lee et al., arXiv 2107.01408). With an
inverse-gamma mixing ``InvGamma(ν/2, ν/2)`` it is the multivariate t with ``ν`` degrees of
freedom (:class:`MultivariateTPosterior`); with :class:`~priors.processes.WeightedScales` it is
the importance-sampled Burr-XII predictive.

Samples are reparameterised from standard-normal base samples of shape
``[*batch, q + 1, 1]``: the first ``q`` rows drive ``z``, the last one drives ``σ²`` through its
inverse CDF, ``σ² = F⁻¹(Φ(z₀))``. BoTorch's quasi-MC normal samplers therefore work unchanged
(``SobolQMCNormalSampler`` is registered for this posterior), so every MC acquisition function
runs on it with gradients with respect to ``X``.
"""

from __future__ import annotations

import torch
from botorch.posteriors import Posterior
from botorch.sampling.get_sampler import GetSampler
from botorch.sampling.normal import SobolQMCNormalSampler
from torch import Tensor
from torch.distributions import Distribution

from priors.processes import InverseGamma, mixture_log_prob, psd_factor, scale_from_normal

__all__ = ["MultivariateTPosterior", "ScaleMixturePosterior"]


class ScaleMixturePosterior(Posterior):
    """``loc + sqrt(σ²) chol(covariance) z`` with ``σ² ~ mixing``; one output, event ``[*batch, q, 1]``.

    Args:
        loc: ``[*batch, q]`` location (the mean when it exists).
        covariance: ``[*batch, q, q]`` unit-scale covariance.
        mixing: scalar distribution of ``σ²`` with an inverse CDF: :class:`~priors.processes.InverseGamma`
            or :class:`~priors.processes.WeightedScales` (others need ``icdf`` and ``mean``).
    """

    def __init__(self, loc: Tensor, covariance: Tensor, mixing: Distribution) -> None:
        if loc.dim() < 1 or covariance.shape != loc.shape + loc.shape[-1:]:
            raise ValueError(f"covariance must have shape [*batch, q, q] = {list(loc.shape + loc.shape[-1:])} for loc "
                             f"[*batch, q] = {list(loc.shape)}, got {list(covariance.shape)}")
        if mixing.batch_shape != torch.Size([]) or mixing.event_shape != torch.Size([]):
            raise ValueError(f"mixing must be a scalar distribution, got batch {list(mixing.batch_shape)}")
        self.loc = loc
        self.covariance = covariance
        self.mixing = mixing
        self._scale_tril: Tensor | None = None

    # ------------------------------------------------------------------ description
    @property
    def device(self) -> torch.device:
        return self.loc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.loc.dtype

    @property
    def mean(self) -> Tensor:
        """``[*batch, q, 1]`` (the location; the mean when the mixing's mean is finite)."""
        return self.loc.unsqueeze(-1)

    @property
    def variance(self) -> Tensor:
        """``E[σ²] diag(covariance)`` ``[*batch, q, 1]`` (``inf`` when ``E[σ²]`` is)."""
        return (self.mixing.mean.to(self.loc) * self.covariance.diagonal(dim1=-2, dim2=-1)).unsqueeze(-1)

    @property
    def scale_tril(self) -> Tensor:
        """A square root of ``covariance`` ``[*batch, q, q]``: its Cholesky factor (jittered if needed), or
        for an indefinite covariance (a batch of nearly coincident points) the square root of the nearest
        PSD matrix, with a warning (:func:`priors.processes.psd_factor`)."""
        if self._scale_tril is None:
            self._scale_tril = psd_factor(self.covariance, "posterior covariance")
        return self._scale_tril

    def _extended_shape(self, sample_shape: torch.Size = torch.Size()) -> torch.Size:  # noqa: B008
        return torch.Size(sample_shape) + self.loc.shape + torch.Size([1])

    @property
    def base_sample_shape(self) -> torch.Size:
        """``[*batch, q + 1, 1]``: ``q`` normals for ``z`` and one for ``σ²``."""
        return self.loc.shape[:-1] + torch.Size([self.loc.shape[-1] + 1, 1])

    @property
    def batch_range(self) -> tuple[int, int]:
        return (0, -2)

    # ------------------------------------------------------------------ sampling
    def rsample_from_base_samples(self, sample_shape: torch.Size, base_samples: Tensor) -> Tensor:
        """Samples ``[*sample_shape, *batch, q, 1]`` from standard normals ``[*sample_shape, *batch?, q + 1, 1]``.

        The batch dimensions of ``base_samples`` may be 1 (BoTorch collapses them so that all
        t-batches share base samples).
        """
        sample_shape = torch.Size(sample_shape)
        q = self.loc.shape[-1]
        if (base_samples.shape[: len(sample_shape)] != sample_shape or base_samples.shape[-2:] != (q + 1, 1)
                or base_samples.dim() != len(sample_shape) + len(self.base_sample_shape)):
            raise ValueError(f"base_samples must have shape sample_shape + base_sample_shape = "
                             f"{list(sample_shape + self.base_sample_shape)} (batch dims may be 1), "
                             f"got {list(base_samples.shape)}")
        base = base_samples.to(self.loc)
        z, z0 = base[..., :q, :], base[..., q, 0]
        sigma = scale_from_normal(self.mixing, z0).to(self.loc).sqrt()
        return self.loc.unsqueeze(-1) + sigma[..., None, None] * (self.scale_tril @ z)

    def rsample(self, sample_shape: torch.Size | None = None) -> Tensor:
        """Samples ``[*sample_shape, *batch, q, 1]`` (reparameterised)."""
        sample_shape = torch.Size([]) if sample_shape is None else torch.Size(sample_shape)
        base = torch.randn(sample_shape + self.base_sample_shape, dtype=self.dtype, device=self.device)
        return self.rsample_from_base_samples(sample_shape, base)

    # ------------------------------------------------------------------ densities and transforms
    def marginal_log_prob(self, value: Tensor) -> Tensor:
        """Log-density of each point's marginal at ``value`` ``[..., *batch, q, 1]`` (same shape)."""
        var = self.covariance.diagonal(dim1=-2, dim2=-1)
        return mixture_log_prob(value.squeeze(-1), self.loc, var, self.mixing).unsqueeze(-1)

    def density(self, value: Tensor) -> Tensor:
        """Marginal densities at ``value`` ``[..., *batch, q, 1]``."""
        return self.marginal_log_prob(value).exp()

    def affine(self, scale: Tensor | float, shift: Tensor | float) -> ScaleMixturePosterior:
        """The posterior of ``shift + scale · f`` (scalars, e.g. an un-standardisation)."""
        scale = torch.as_tensor(scale).to(self.loc)
        return ScaleMixturePosterior(shift + scale * self.loc, scale.square() * self.covariance, self.mixing)


class MultivariateTPosterior(ScaleMixturePosterior):
    """The multivariate Student t ``t_ν(loc, scale_matrix)`` as a BoTorch posterior.

    Args:
        loc: ``[*batch, q]``.
        scale_matrix: ``[*batch, q, q]`` (the covariance is ``ν/(ν-2)`` times it for ``ν > 2``).
        df: degrees of freedom ``ν > 0`` (scalar).
    """

    def __init__(self, loc: Tensor, scale_matrix: Tensor, df: Tensor | float) -> None:
        df = torch.as_tensor(df).to(loc)
        if df.dim() != 0 or not bool(df > 0):
            raise ValueError(f"df must be a positive scalar, got {df.tolist()!r}")
        super().__init__(loc, scale_matrix, InverseGamma(df / 2, df / 2, validate_args=False))

    @property
    def df(self) -> Tensor:
        return 2 * self.mixing.concentration


@GetSampler.register(ScaleMixturePosterior)
def _get_sampler_scale_mixture(posterior: ScaleMixturePosterior, sample_shape: torch.Size, *,
                               seed: int | None = None) -> SobolQMCNormalSampler:
    """Quasi-MC normal base samples; the posterior maps the last row to ``σ²``."""
    return SobolQMCNormalSampler(sample_shape=sample_shape, seed=seed)
