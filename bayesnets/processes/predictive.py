"""``NPPredictive``: the predictive distribution every neural process returns.

A neural process with a source of functional uncertainty (NP/ANP latent ``z``, MPNP
pseudo-contexts) predicts an equally weighted mixture over ``K`` function draws of Gaussians
``N(μ_k(x), σ_k(x)²)``; a CNP is the case ``K = 1``. One draw ``k`` is shared by all the
targets of a task, so :meth:`NPPredictive.sample` gives coherent function samples, while
:meth:`NPPredictive.log_prob` is the per-point marginal ``log (1/K) Σ_k N(y_t | μ_k, σ_k²)`` —
the "context/target log-likelihood" reported in the NP literature (e.g. juho-lee/bnp).
"""

from __future__ import annotations

import math

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, Normal, constraints

__all__ = ["NPPredictive"]


class NPPredictive(Distribution):
    """Uniform mixture over ``K`` function draws of independent Gaussians per target point.

    Batch shape ``[*b, Nt]``, event shape ``[y_dim]``.

    Args:
        loc: ``[K, *b, Nt, y_dim]`` component means.
        scale: ``[K, *b, Nt, y_dim]`` component standard deviations.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}  # noqa: RUF012
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        if loc.shape != scale.shape or loc.dim() < 3:
            raise ValueError(f"loc and scale must share a shape [K, *batch, Nt, y_dim], got {tuple(loc.shape)} "
                             f"and {tuple(scale.shape)}")
        self.loc, self.scale = loc, scale
        super().__init__(batch_shape=loc.shape[1:-1], event_shape=loc.shape[-1:], validate_args=False)

    @property
    def num_components(self) -> int:
        """``K``, the number of function draws (1 for a CNP)."""
        return self.loc.shape[0]

    @property
    def components(self) -> Normal:
        """The ``K`` Gaussians, batch shape ``[K, *b, Nt, y_dim]``."""
        return Normal(self.loc, self.scale)

    @property
    def mean(self) -> Tensor:
        """``[*b, Nt, y_dim]``."""
        return self.loc.mean(0)

    @property
    def variance(self) -> Tensor:
        """Law of total variance over the draws: ``E_k[σ_k²] + Var_k[μ_k]``, ``[*b, Nt, y_dim]``."""
        return self.scale.pow(2).mean(0) + self.loc.var(0, unbiased=False)

    @property
    def stddev(self) -> Tensor:
        """``[*b, Nt, y_dim]``."""
        return self.variance.sqrt()

    @property
    def std(self) -> Tensor:
        """Alias of :attr:`stddev`."""
        return self.stddev

    def sample(self, sample_shape: Size | tuple[int, ...] = ()) -> Tensor:
        """Function samples ``[*sample_shape, *b, Nt, y_dim]``: each picks one draw ``k`` per task
        (shared by all its targets) and adds the Gaussian noise of that draw."""
        sample_shape = Size(sample_shape)
        n = math.prod(sample_shape)
        with torch.no_grad():
            loc, scale = self.loc.movedim(0, -3), self.scale.movedim(0, -3)  # [*task, K, Nt, y_dim]
            task_shape = loc.shape[:-3]
            k = torch.randint(self.num_components, (n, *task_shape), device=loc.device)
            index = k[..., None, None, None].expand(n, *task_shape, 1, *loc.shape[-2:])
            mu = torch.gather(loc.expand(n, *loc.shape), -3, index).squeeze(-3)
            sd = torch.gather(scale.expand(n, *scale.shape), -3, index).squeeze(-3)
            return (mu + sd * torch.randn_like(mu)).reshape(*sample_shape, *self.loc.shape[1:])

    def _component_log_prob(self, value: Tensor) -> Tensor:
        if value.shape == self.batch_shape and self.event_shape == (1,):
            value = value.unsqueeze(-1)
        if value.shape[-len(self.loc.shape) + 1:] != self.loc.shape[1:]:
            raise ValueError(f"value must have shape {tuple(self.loc.shape[1:])} (or without the last dim when "
                             f"y_dim = 1), got {tuple(value.shape)}")
        return self.components.log_prob(value).sum(-1)  # [K, *b, Nt]

    def log_prob(self, value: Tensor) -> Tensor:
        """Per-point marginal log-density ``log (1/K) Σ_k Π_d N(y_td | μ_ktd, σ_ktd²)``: ``[*b, Nt]``."""
        lp = self._component_log_prob(value)
        return torch.logsumexp(lp, 0) - math.log(self.num_components)

    def joint_log_prob(self, value: Tensor) -> Tensor:
        """Joint log-density of all targets of a task, ``log (1/K) Σ_k Π_t N(y_t | μ_kt, σ_kt²)``: ``[*b]``."""
        lp = self._component_log_prob(value).sum(-1)
        return torch.logsumexp(lp, 0) - math.log(self.num_components)
