"""Observation models ``p(y | f)`` for Bayesian networks.

A likelihood turns the network output ``f`` of shape ``[*batch, N, num_outputs]`` into
a distribution over ``y`` with batch shape ``[*batch, N]`` (one factor per observation,
so ArviZ gets a pointwise log-likelihood). Scalar-output likelihoods (Gaussian with one
output, Student-t, Bernoulli) take a trailing output dim of size one and ``y`` of shape
``[N]``; multi-output Gaussians take ``y`` of shape ``[N, num_outputs]``; Categorical
takes logits ``[*batch, N, classes]`` and integer labels ``[N]``.

Noise parameters are either fixed numbers or given a prior (any positive
distribution); in the latter case they are latent sites named ``"likelihood.<name>"``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from inference.checks import positive_float
from priors.distributions import move_distribution

__all__ = [
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "HeteroscedasticGaussian",
    "Likelihood",
    "StudentT",
]

Hyper = float | Distribution


class Likelihood(nn.Module, ABC):
    """Base class for observation models.

    Subclasses declare fixed-or-latent hyperparameters with :meth:`_hyper`, and build
    the observation distribution in :meth:`dist`.
    """

    #: Whether ``y`` holds integer class labels (validated as such).
    discrete: bool = False

    def __init__(self, num_outputs: int = 1) -> None:
        super().__init__()
        if int(num_outputs) < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        self.num_outputs = int(num_outputs)
        self._fixed: dict[str, float] = {}
        self._priors: dict[str, Distribution] = {}

    def _hyper(self, name: str, value: Hyper) -> None:
        """Register a hyperparameter: a positive float (fixed) or a prior distribution."""
        if isinstance(value, Distribution):
            if value.batch_shape != () or value.event_shape != ():
                raise ValueError(f"the prior for {name} must be a scalar distribution, got batch "
                                 f"shape {tuple(value.batch_shape)} and event shape {tuple(value.event_shape)}")
            support = value.support
            # Positive families (Gamma, HalfNormal, LogNormal, ...) have a lower bound of 0
            # and no upper bound; anything else could put a noise scale below zero.
            if getattr(support, "lower_bound", None) != 0 or hasattr(support, "upper_bound"):
                raise ValueError(f"the prior for {name} must have positive support, got {support}")
            self._priors[name] = value
        else:
            self._fixed[name] = positive_float(value, name)

    def site_name(self, name: str) -> str:
        return f"likelihood.{name}"

    def hyper_sites(self, like: Tensor) -> dict[str, Distribution]:
        """Latent noise parameters (site name -> prior), empty when all are fixed."""
        return {self.site_name(n): move_distribution(d, like) for n, d in self._priors.items()}

    def value(self, name: str, hyper: Mapping[str, Tensor], f: Tensor, event_dims: int = 0) -> Tensor:
        """A hyperparameter's value, latent (from ``hyper``) or fixed, broadcastable with
        ``f[*batch, N, *event]``."""
        if name in self._fixed:
            return torch.as_tensor(self._fixed[name], dtype=f.dtype, device=f.device)
        v = hyper[self.site_name(name)]
        # v is [*batch]; f is [*batch, N, *event]: append one dim for N and the event dims.
        return v.reshape(v.shape + (1,) * (1 + event_dims))

    def check_output(self, f: Tensor) -> None:
        if f.dim() < 2 or f.shape[-1] != self.num_outputs:
            raise ValueError(
                f"the network output must have shape [N, {self.num_outputs}] for {type(self).__name__}"
                f"(num_outputs={self.num_outputs}), got {tuple(f.shape)}"
            )

    def check_target(self, y: Tensor, n: int) -> Tensor:
        """Validate ``y`` and return it in canonical shape (``[N]`` or ``[N, num_outputs]``)."""
        want = (n,) if self.num_outputs == 1 or self.discrete else (n, self.num_outputs)
        if self.num_outputs == 1 and not self.discrete and y.dim() == 2 and y.shape[1] == 1:
            y = y.squeeze(-1)
        if tuple(y.shape) != want:
            raise ValueError(f"y must have shape {list(want)} for {type(self).__name__}, got {tuple(y.shape)}")
        return y

    @abstractmethod
    def dist(self, f: Tensor, hyper: Mapping[str, Tensor]) -> Distribution:
        """Distribution of ``y`` given network outputs ``f`` ``[*batch, N, num_outputs]``;
        its batch shape is ``[*batch, N]``."""

    def mean(self, f: Tensor, hyper: Mapping[str, Tensor]) -> Tensor:
        """Predictive mean of ``y`` given ``f`` (default: the distribution's mean)."""
        return self.dist(f, hyper).mean

    def extra_repr(self) -> str:
        parts = [f"{k}={v:g}" for k, v in self._fixed.items()]
        parts += [f"{k}~{type(d).__name__}" for k, d in self._priors.items()]
        return ", ".join(parts)


class Gaussian(Likelihood):
    """Homoscedastic Gaussian noise ``y ~ N(f, scale²)``.

    Args:
        scale: the noise standard deviation, fixed (a float) or latent (a prior
            distribution with positive support, e.g. ``dist.HalfNormal(1.0)``).
        num_outputs: outputs per observation; ``y`` is ``[N]`` when 1, else ``[N, num_outputs]``.
    """

    def __init__(self, scale: Hyper = 1.0, num_outputs: int = 1) -> None:
        super().__init__(num_outputs)
        self._hyper("scale", scale)

    def dist(self, f: Tensor, hyper: Mapping[str, Tensor]) -> Distribution:
        if self.num_outputs == 1:
            return dist.Normal(f.squeeze(-1), self.value("scale", hyper, f))
        return dist.Normal(f, self.value("scale", hyper, f, 1)).to_event(1)


class HeteroscedasticGaussian(Likelihood):
    """Input-dependent Gaussian noise: the network outputs ``[mean, raw_scale]``.

    ``y ~ N(f[..., 0], (softplus(f[..., 1]) + min_scale)²)``; the network needs two outputs.

    Args:
        min_scale: a floor on the noise scale that keeps the likelihood bounded.
    """

    def __init__(self, min_scale: float = 1e-3) -> None:
        super().__init__(num_outputs=2)
        self.min_scale = positive_float(min_scale, "min_scale")

    def check_target(self, y: Tensor, n: int) -> Tensor:
        if y.dim() == 2 and y.shape[1] == 1:
            y = y.squeeze(-1)
        if tuple(y.shape) != (n,):
            raise ValueError(f"y must have shape [{n}] for HeteroscedasticGaussian, got {tuple(y.shape)}")
        return y

    def dist(self, f: Tensor, hyper: Mapping[str, Tensor]) -> Distribution:
        return dist.Normal(f[..., 0], F.softplus(f[..., 1]) + self.min_scale)


class StudentT(Likelihood):
    """Student-t noise ``y ~ t_df(f, scale)``, robust to outliers.

    Args:
        df: degrees of freedom, fixed or with a prior.
        scale: scale, fixed or with a prior.
    """

    def __init__(self, df: Hyper = 4.0, scale: Hyper = 1.0) -> None:
        super().__init__(num_outputs=1)
        self._hyper("df", df)
        self._hyper("scale", scale)

    def dist(self, f: Tensor, hyper: Mapping[str, Tensor]) -> Distribution:
        return dist.StudentT(self.value("df", hyper, f), f.squeeze(-1), self.value("scale", hyper, f))

    def mean(self, f: Tensor, hyper: Mapping[str, Tensor]) -> Tensor:
        # The t mean is undefined for df <= 1; the location is the useful point summary.
        return f.squeeze(-1)


class Bernoulli(Likelihood):
    """Binary labels ``y ∈ {0, 1}`` with logits ``f`` (one output)."""

    discrete = True

    def __init__(self) -> None:
        super().__init__(num_outputs=1)

    def check_target(self, y: Tensor, n: int) -> Tensor:
        if y.dim() == 2 and y.shape[1] == 1:
            y = y.squeeze(-1)
        if tuple(y.shape) != (n,):
            raise ValueError(f"y must have shape [{n}] for Bernoulli, got {tuple(y.shape)}")
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("y must contain only 0 and 1 for Bernoulli")
        return y if y.is_floating_point() else y.to(torch.get_default_dtype())

    def dist(self, f: Tensor, hyper: Mapping[str, Tensor]) -> Distribution:
        return dist.Bernoulli(logits=f.squeeze(-1))


class Categorical(Likelihood):
    """Class labels ``y ∈ {0, ..., num_classes - 1}`` with logits ``f`` ``[*batch, N, num_classes]``."""

    discrete = True

    def __init__(self, num_classes: int) -> None:
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        super().__init__(num_outputs=int(num_classes))

    def check_target(self, y: Tensor, n: int) -> Tensor:
        if tuple(y.shape) != (n,):
            raise ValueError(f"y must have shape [{n}] (integer labels) for Categorical, got {tuple(y.shape)}")
        if y.is_floating_point():
            if not bool((y == y.round()).all()):
                raise ValueError("y must hold integer class labels for Categorical")
            y = y.long()
        if bool((y < 0).any()) or bool((y >= self.num_outputs).any()):
            raise ValueError(f"y must hold labels in [0, {self.num_outputs - 1}] for Categorical")
        return y

    def dist(self, f: Tensor, hyper: Mapping[str, Tensor]) -> Distribution:
        return dist.Categorical(logits=f)

    def mean(self, f: Tensor, hyper: Mapping[str, Tensor]) -> Tensor:
        """Class probabilities ``[*batch, N, num_classes]``."""
        return torch.softmax(f, dim=-1)

