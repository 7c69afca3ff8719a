"""Riemann ("bar") distributions: the PFN's regression head (Müller et al., arXiv:2112.10510, §4, App. E.2).

The real line is cut at ``K + 1`` borders ``b_0 < ... < b_K`` into ``K`` buckets of equal
prior probability (:func:`fit_borders`, from a sample of prior targets). The network gives
``K`` logits; bucket ``k`` gets probability ``p_k = softmax(logits)_k``. Inner buckets spread
their mass uniformly. The outer two are replaced by half-normals so the support is the whole
line: bucket 0 has density ``p_0 * HalfNormal(b_1 - y; s_0)`` on ``(-inf, b_1)`` and bucket
``K-1`` has ``p_{K-1} * HalfNormal(y - b_{K-1}; s_{K-1})`` on ``(b_{K-1}, inf)``, with scales
chosen so half of each tail's mass lies inside its own bucket
(``s = width / HalfNormal(1).icdf(0.5)``, as in the paper's ``FullSupportBarDistribution``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

__all__ = ["BarDistribution", "fit_borders"]

# HalfNormal(1).icdf(0.5) = Phi^{-1}(0.75): puts half of a tail's mass inside its outer bucket.
_HALF_NORMAL_MEDIAN = math.sqrt(2.0) * torch.special.erfinv(torch.tensor(0.5, dtype=torch.float64)).item()
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def fit_borders(ys: Tensor, num_buckets: int) -> Tensor:
    """Bucket borders with equal empirical mass under a sample of prior targets.

    Args:
        ys: any shape; a large sample of targets drawn from the task prior.
        num_buckets: ``K``.

    Returns:
        ``[K + 1]`` strictly increasing borders; the outer two are the sample's min and max.

    Raises:
        ValueError: too few distinct values for ``K`` buckets.
    """
    ys = ys.detach().flatten()
    ys = ys[torch.isfinite(ys)].sort().values
    if int(num_buckets) < 2:
        raise ValueError(f"num_buckets must be >= 2, got {num_buckets}")
    if ys.numel() < 2 * num_buckets:
        raise ValueError(f"need at least 2 * num_buckets = {2 * num_buckets} finite targets, got {ys.numel()}")
    n = ys.numel()
    # Inner borders: midpoints between the last value of one equal-count block and the first of the next.
    idx = torch.arange(1, num_buckets, device=ys.device) * n // num_buckets
    inner = 0.5 * (ys[idx - 1] + ys[idx])
    borders = torch.cat([ys[:1], inner, ys[-1:]])
    if not bool((borders[1:] > borders[:-1]).all()):
        raise ValueError("prior targets have too few distinct values for the requested number of buckets; "
                         "use fewer buckets (or a classification head for discrete targets)")
    return borders


class BarDistribution(Distribution):
    """Full-support Riemann distribution with batch shape ``logits.shape[:-1]``.

    Args:
        logits: ``[..., K]`` unnormalised log bucket probabilities.
        borders: ``[K + 1]`` strictly increasing bucket borders (same device as ``logits``).

    Everything is computed in ``logits``' dtype; ``mean``, ``variance``, ``cdf``, ``log_prob``
    and ``quantile`` are closed forms; ``rsample`` is inverse-CDF sampling (differentiable
    with respect to the logits between bucket switches).
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {"logits": constraints.real_vector}
    support = constraints.real
    has_rsample = True

    def __init__(self, logits: Tensor, borders: Tensor, validate_args: bool | None = False) -> None:
        if logits.shape[-1] + 1 != borders.shape[-1] or borders.dim() != 1:
            raise ValueError(f"borders must have shape [K + 1] = [{logits.shape[-1] + 1}], got {tuple(borders.shape)}")
        self.logits = logits
        self.borders = borders.to(logits.dtype)
        widths = self.borders[1:] - self.borders[:-1]
        self.widths = widths
        self.tail_scales = widths[[0, -1]] / _HALF_NORMAL_MEDIAN  # [2]: left and right half-normal scales
        super().__init__(batch_shape=logits.shape[:-1], validate_args=validate_args)

    @property
    def probs(self) -> Tensor:
        """Bucket probabilities ``[..., K]``."""
        return torch.softmax(self.logits, dim=-1)

    @property
    def num_buckets(self) -> int:
        return self.logits.shape[-1]

    def _bucket(self, y: Tensor) -> Tensor:
        """Index of the bucket holding ``y`` (outer buckets extend to +-inf)."""
        inner = self.borders[1:-1].contiguous()
        return torch.searchsorted(inner, y.contiguous(), right=True)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density at ``value`` (broadcast against the batch shape)."""
        y = torch.as_tensor(value, dtype=self.logits.dtype, device=self.logits.device)
        y, logits = torch.broadcast_tensors(y, self.logits[..., 0])[0], self.logits
        logp = torch.log_softmax(logits, dim=-1).expand(*y.shape, self.num_buckets)
        k = self._bucket(y)
        lp = logp.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        inner = lp - torch.log(self.widths[k])
        s_l, s_r = self.tail_scales[0], self.tail_scales[1]
        # Half-normal log density: log(2) - log(s) - 0.5 log(2 pi) - t^2 / (2 s^2).
        log_hn_const = math.log(2.0) - 0.5 * math.log(2 * math.pi)
        t_l = (self.borders[1] - y).clamp_min(0)
        t_r = (y - self.borders[-2]).clamp_min(0)
        left = lp + log_hn_const - torch.log(s_l) - 0.5 * (t_l / s_l) ** 2
        right = lp + log_hn_const - torch.log(s_r) - 0.5 * (t_r / s_r) ** 2
        return torch.where(k == 0, left, torch.where(k == self.num_buckets - 1, right, inner))

    def cdf(self, value: Tensor) -> Tensor:
        """``P(Y <= value)``."""
        y = torch.as_tensor(value, dtype=self.logits.dtype, device=self.logits.device)
        y = torch.broadcast_tensors(y, self.logits[..., 0])[0]
        p = self.probs.expand(*y.shape, self.num_buckets)
        before = torch.cumsum(p, dim=-1) - p  # mass of buckets left of each bucket
        k = self._bucket(y)
        pk = p.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        ck = before.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        frac = ((y - self.borders[k]) / self.widths[k]).clamp(0, 1)
        s_l, s_r = self.tail_scales[0], self.tail_scales[1]
        left = pk * torch.erfc((self.borders[1] - y).clamp_min(0) / (s_l * math.sqrt(2)))
        right = ck + pk * torch.erf((y - self.borders[-2]).clamp_min(0) / (s_r * math.sqrt(2)))
        return torch.where(k == 0, left, torch.where(k == self.num_buckets - 1, right, ck + pk * frac))

    def icdf(self, value: Tensor) -> Tensor:
        """Quantile function at probabilities ``value`` in ``(0, 1)`` (broadcast against the batch shape)."""
        q = torch.as_tensor(value, dtype=self.logits.dtype, device=self.logits.device)
        q = torch.broadcast_tensors(q, self.logits[..., 0])[0]
        p = self.probs.expand(*q.shape, self.num_buckets)
        cum = torch.cumsum(p, dim=-1)
        k = torch.searchsorted(cum.contiguous(), q.unsqueeze(-1).contiguous()).squeeze(-1)
        k = k.clamp_max(self.num_buckets - 1)
        pk = p.gather(-1, k.unsqueeze(-1)).squeeze(-1).clamp_min(torch.finfo(q.dtype).tiny)
        ck = (cum - p).gather(-1, k.unsqueeze(-1)).squeeze(-1)
        inner = self.borders[k] + ((q - ck) / pk).clamp(0, 1) * self.widths[k]
        s_l, s_r = self.tail_scales[0], self.tail_scales[1]
        eps = torch.finfo(q.dtype).eps
        # Left tail: q = p_0 * erfc(t / (s sqrt 2)); right tail: q = c + p * erf(t / (s sqrt 2)).
        u_l = (q / pk).clamp(eps, 1.0)
        left = self.borders[1] - s_l * math.sqrt(2) * torch.erfinv(1.0 - u_l)
        u_r = ((q - ck) / pk).clamp(0.0, 1.0 - eps)
        right = self.borders[-2] + s_r * math.sqrt(2) * torch.erfinv(u_r)
        return torch.where(k == 0, left, torch.where(k == self.num_buckets - 1, right, inner))

    def quantile(self, q: float | Tensor) -> Tensor:
        """Alias of :meth:`icdf` (``q`` broadcast against the batch shape)."""
        return self.icdf(q)

    @property
    def mean(self) -> Tensor:
        p = self.probs
        centers = 0.5 * (self.borders[1:] + self.borders[:-1])
        offset = self.tail_scales * _SQRT_2_OVER_PI  # half-normal means
        centers = torch.cat([(self.borders[1] - offset[0]).reshape(1), centers[1:-1],
                             (self.borders[-2] + offset[1]).reshape(1)])
        return (p * centers).sum(-1)

    @property
    def variance(self) -> Tensor:
        p = self.probs
        a, b = self.borders[:-1], self.borders[1:]
        second = (a * a + a * b + b * b) / 3.0  # E[y^2] of a uniform on [a, b]
        s_l, s_r = self.tail_scales[0], self.tail_scales[1]
        m_l, m_r = s_l * _SQRT_2_OVER_PI, s_r * _SQRT_2_OVER_PI
        left = self.borders[1] ** 2 - 2 * self.borders[1] * m_l + s_l**2
        right = self.borders[-2] ** 2 + 2 * self.borders[-2] * m_r + s_r**2
        second = torch.cat([left.reshape(1), second[1:-1], right.reshape(1)])
        return ((p * second).sum(-1) - self.mean**2).clamp_min(0)

    @property
    def stddev(self) -> Tensor:
        return self.variance.sqrt()

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Inverse-CDF draws ``[*sample_shape, *batch_shape]``."""
        shape = torch.Size(sample_shape) + self.batch_shape
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        return self.icdf(u)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)
