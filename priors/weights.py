"""Weight-space priors for Bayesian neural networks.

A weight prior is an ``nn.Module`` that holds its hyperparameters (so ``.to(device)``
moves them and :mod:`priors.functional` can optimise them) and, once bound to a
network's parameter shapes, produces the Pyro distribution of every parameter tensor.

Hierarchical priors add latent *hyper sites* (e.g. one Gamma precision per tensor);
the weight distributions are then conditional on those sites. The same description
serves the Pyro model (``pyro.sample`` per site, in order) and the fast
``log_density`` path of :class:`bayesnets.bnn.BayesianNet` (a sum of ``log_prob``).

Conventions for a parameter tensor of shape ``[out, in, *kernel]``: its fan-in is
``in * prod(kernel)``; tensors with fewer than two dimensions (biases, norm gains) are
"bias-like" and never fan-in scaled.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from inference.checks import positive_float

__all__ = [
    "GaussianWeightPrior",
    "HierarchicalGaussian",
    "IIDGaussian",
    "LayerwiseGaussian",
    "WeightPrior",
    "fan_in",
    "forward_draws",
]


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def fan_in(shape: torch.Size) -> int:
    """Fan-in of a parameter tensor: ``prod(shape[1:])``, or 1 for bias-like tensors."""
    if len(shape) < 2:
        return 1
    return math.prod(shape[1:])


def _broadcast_scale(scale: Tensor, shape: torch.Size) -> Tensor:
    """Append singleton dims so a per-draw scale ``[*batch]`` broadcasts over ``shape``."""
    return scale.reshape(scale.shape + (1,) * len(shape))


def _normal(scale: Tensor, shape: torch.Size) -> dist.Distribution:
    """Zero-mean normal with event shape ``shape`` and batch shape ``scale.shape``."""
    scale = _broadcast_scale(scale, shape)
    batch = scale.shape[: scale.dim() - len(shape)]
    loc = torch.zeros((), dtype=scale.dtype, device=scale.device).expand(batch + shape)
    return dist.Normal(loc, scale.expand_as(loc)).to_event(len(shape))


class WeightPrior(nn.Module, ABC):
    """Base class: the prior over every parameter tensor of a network.

    Subclasses implement :meth:`weight_dists` and, when hierarchical, :meth:`hyper_sites`.
    :meth:`bind` is called once by :class:`~bayesnets.bnn.BayesianNet` with the
    network's parameter shapes; per-tensor hyperparameters are created there.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shapes: dict[str, torch.Size] = {}

    @property
    def shapes(self) -> dict[str, torch.Size]:
        """Parameter name -> shape of the network this prior is bound to."""
        if not self._shapes:
            raise RuntimeError(
                f"{type(self).__name__} is not bound to a network yet; pass it to BayesianNet "
                "or call prior.bind(shapes) first"
            )
        return self._shapes

    def bind(self, shapes: Mapping[str, torch.Size]) -> None:
        """Attach the prior to a network's parameter shapes (name -> ``torch.Size``)."""
        if not shapes:
            raise ValueError("shapes must name at least one parameter tensor")
        if self._shapes and dict(shapes) != self._shapes:
            raise ValueError(
                f"{type(self).__name__} is already bound to a network with other parameter shapes; "
                "use a new prior object for each network"
            )
        self._shapes = {k: torch.Size(v) for k, v in shapes.items()}

    def hyper_sites(self, like: Tensor) -> dict[str, dist.Distribution]:
        """Latent hyperparameters (name -> prior), sampled before the weights. Default: none."""
        return {}

    @abstractmethod
    def weight_dists(self, hyper: Mapping[str, Tensor], like: Tensor) -> dict[str, dist.Distribution]:
        """The distribution of each parameter tensor given the hyper sites' values.

        Args:
            hyper: values of :meth:`hyper_sites`, each shaped ``[*batch, *site_shape]``.
            like: a tensor giving the dtype and device to build the distributions on.

        Returns:
            Parameter name -> distribution with event shape equal to the parameter's
            shape and batch shape ``batch``.
        """

    def sample(self, like: Tensor, sample_shape: torch.Size | tuple[int, ...] = ()) -> dict[str, Tensor]:
        """Ancestral draws of all prior sites, reparameterised where the family allows.

        Gradients flow to the prior's hyperparameters (used by functional prior matching).

        Returns:
            Site name -> tensor ``[*sample_shape, *site_shape]``, hyper sites first.
        """
        sample_shape = torch.Size(sample_shape)
        out: dict[str, Tensor] = {}
        for name, d in self.hyper_sites(like).items():
            out[name] = d.rsample(sample_shape) if d.has_rsample else d.sample(sample_shape)
        for name, d in self.weight_dists(out, like).items():
            # Batch shape already carries the hyper draws' sample_shape when there are hyper sites.
            extra = sample_shape if d.batch_shape == () else torch.Size()
            out[name] = d.rsample(extra) if d.has_rsample else d.sample(extra)
        return out

    def log_prob(self, params: Mapping[str, Tensor]) -> Tensor:
        """Joint log-density of hyper sites and weights (constrained space), ``[*batch]``."""
        some = next(iter(params.values()))
        total = torch.zeros((), dtype=some.dtype, device=some.device)
        for name, d in self.hyper_sites(some).items():
            total = total + d.log_prob(params[name])
        for name, d in self.weight_dists(params, some).items():
            total = total + d.log_prob(params[name])
        return total


class GaussianWeightPrior(WeightPrior):
    """Base for priors whose every tensor is zero-mean Gaussian given the hyper sites.

    Subclasses give per-tensor standard deviations (:meth:`weight_scales`); the
    distributions and a closed-form log-density follow. The closed form matters: the
    prior term sits in every gradient step of every sampler, and building a ``Normal``
    per tensor per call cost about a third of a small network's step.
    """

    @abstractmethod
    def weight_scales(self, hyper: Mapping[str, Tensor], like: Tensor) -> dict[str, Tensor]:
        """Parameter name -> prior standard deviation, ``[*batch]`` (``[]`` when fixed)."""

    def weight_dists(self, hyper: Mapping[str, Tensor], like: Tensor) -> dict[str, dist.Distribution]:
        return {n: _normal(s, self.shapes[n]) for n, s in self.weight_scales(hyper, like).items()}

    def log_prob(self, params: Mapping[str, Tensor]) -> Tensor:
        some = next(iter(params.values()))
        total = torch.zeros((), dtype=some.dtype, device=some.device)
        for name, d in self.hyper_sites(some).items():
            total = total + d.log_prob(params[name])
        for name, scale in self.weight_scales(params, some).items():
            shape = self.shapes[name]
            w = params[name]
            n = math.prod(shape)
            sq = w.square().sum(tuple(range(w.dim() - len(shape), w.dim()))) if shape else w.square()
            total = total - 0.5 * sq / scale.square() - n * (scale.log() + _HALF_LOG_2PI)
        return total


class IIDGaussian(GaussianWeightPrior):
    """Every parameter i.i.d. ``N(0, scale²)`` (the "FG"-style fixed prior).

    Args:
        scale: the prior standard deviation of every weight and bias.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        positive_float(scale, "scale")
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)), requires_grad=False)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp()

    def weight_scales(self, hyper: Mapping[str, Tensor], like: Tensor) -> dict[str, Tensor]:
        s = self.scale.to(like)
        return dict.fromkeys(self.shapes, s)


class LayerwiseGaussian(GaussianWeightPrior):
    """Zero-mean Gaussian per tensor with ``std = scale / sqrt(fan_in)`` for weights.

    Each parameter tensor gets its own scale (initialised to ``scale`` for weights and
    ``bias_scale`` for bias-like tensors). The scales are ``nn.Parameter``s with
    ``requires_grad=False``; call ``prior.requires_grad_(True)`` to learn them (the
    GPi-G prior of Tran et al., arXiv:2011.12829).

    Args:
        scale: weight scale before the fan-in division.
        bias_scale: standard deviation of bias-like tensors (default: ``scale``).
        fan_in: divide weight scales by ``sqrt(fan_in)`` ("scaled variance" / NTK style).
        output_scale: scale of the last weight tensor (the read-out layer; default ``scale``).
            With ``fan_in``, it sets the prior amplitude of the network's outputs: for bounded
            activations such as tanh the output's prior standard deviation is at most about
            ``sqrt(output_scale² + bias_scale²)`` whatever the hidden layers' ``scale``, which sets
            how fast functions vary (arXiv 1711.00165, the NNGP correspondence).
    """

    def __init__(self, scale: float = 1.0, bias_scale: float | None = None, fan_in: bool = True,
                 output_scale: float | None = None) -> None:
        super().__init__()
        self.init_scale = positive_float(scale, "scale")
        self.init_bias_scale = positive_float(scale if bias_scale is None else bias_scale, "bias_scale")
        self.init_output_scale = positive_float(scale if output_scale is None else output_scale, "output_scale")
        self.fan_in = bool(fan_in)
        self.log_scales = nn.Parameter(torch.empty(0), requires_grad=False)

    def bind(self, shapes: Mapping[str, torch.Size]) -> None:
        first = not self._shapes
        super().bind(shapes)
        if first:
            weights = [n for n, s in self._shapes.items() if len(s) >= 2]
            last = weights[-1] if weights else None
            init = [
                math.log(self.init_output_scale if n == last else self.init_scale if len(s) >= 2
                         else self.init_bias_scale)
                for n, s in self._shapes.items()
            ]
            self.log_scales = nn.Parameter(
                torch.tensor(init, dtype=self.log_scales.dtype, device=self.log_scales.device),
                requires_grad=self.log_scales.requires_grad,
            )

    def scales(self) -> dict[str, Tensor]:
        """Parameter name -> effective prior std (fan-in division included)."""
        out = {}
        for i, (name, shape) in enumerate(self.shapes.items()):
            s = self.log_scales[i].exp()
            if self.fan_in:
                s = s / math.sqrt(fan_in(shape))
            out[name] = s
        return out

    def weight_scales(self, hyper: Mapping[str, Tensor], like: Tensor) -> dict[str, Tensor]:
        return {name: s.to(like) for name, s in self.scales().items()}


class HierarchicalGaussian(GaussianWeightPrior):
    """Gaussian weights with a Gamma hyperprior on each tensor's precision.

    ``precision_k ~ Gamma(concentration, rate)`` and ``w ~ N(0, 1/precision_k)`` (divided
    by ``fan_in`` when ``fan_in=True``). A layer's weight and bias get separate
    precisions, as in the GPi-H prior of Tran et al. (arXiv:2011.12829). The Gamma's
    parameters are per-tensor ``nn.Parameter``s (log scale, frozen by default).
    The precision sites are named ``"precision.<parameter name>"``.

    Args:
        concentration: Gamma shape, > 0.
        rate: Gamma rate, > 0.
        fan_in: divide each weight variance by its fan-in.
    """

    def __init__(self, concentration: float = 1.0, rate: float = 1.0, fan_in: bool = True) -> None:
        super().__init__()
        self.init_concentration = positive_float(concentration, "concentration")
        self.init_rate = positive_float(rate, "rate")
        self.fan_in = bool(fan_in)
        self.log_concentration = nn.Parameter(torch.empty(0), requires_grad=False)
        self.log_rate = nn.Parameter(torch.empty(0), requires_grad=False)

    def bind(self, shapes: Mapping[str, torch.Size]) -> None:
        first = not self._shapes
        super().bind(shapes)
        if first:
            n = len(self._shapes)
            kw = {"dtype": self.log_rate.dtype, "device": self.log_rate.device}
            self.log_concentration = nn.Parameter(
                torch.full((n,), math.log(self.init_concentration), **kw), requires_grad=False
            )
            self.log_rate = nn.Parameter(torch.full((n,), math.log(self.init_rate), **kw), requires_grad=False)

    @staticmethod
    def site_name(param_name: str) -> str:
        return f"precision.{param_name}"

    def hyper_sites(self, like: Tensor) -> dict[str, dist.Distribution]:
        a = self.log_concentration.to(like).exp()
        b = self.log_rate.to(like).exp()
        return {self.site_name(name): dist.Gamma(a[i], b[i]) for i, name in enumerate(self.shapes)}

    def weight_scales(self, hyper: Mapping[str, Tensor], like: Tensor) -> dict[str, Tensor]:
        out = {}
        for name, shape in self.shapes.items():
            var = hyper[self.site_name(name)].reciprocal()
            if self.fan_in:
                var = var / fan_in(shape)
            out[name] = var.sqrt()
        return out

    def gibbs_update(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Draw every precision from its conjugate conditional given the weights (GPi-H's Gibbs step).

        ``precision_k | w ~ Gamma(concentration_k + n_k / 2, rate_k + fan_in_k * sum(w_k^2) / 2)``
        for a tensor ``w_k`` of ``n_k`` entries (``fan_in_k = 1`` without fan-in scaling), as in
        the SGHMC sampler of Tran et al. (arXiv:2011.12829). Pass it to an SG-MCMC engine as
        ``fit(..., gibbs=prior.gibbs_update, gibbs_every=k)``.

        Args:
            params: constrained values holding at least every weight tensor, ``[*batch, *shape]``
                (e.g. ``[chains, *shape]``).

        Returns:
            Precision site name -> draws ``[*batch]`` (torch's global generator).
        """
        out = {}
        for i, (name, shape) in enumerate(self.shapes.items()):
            w = params[name].detach()
            batch = w.shape[: w.dim() - len(shape)]
            if w.shape[len(batch):] != shape:
                raise ValueError(f"params[{name!r}] must end in shape {tuple(shape)}, got {tuple(w.shape)}")
            sq = w.square().reshape(*batch, -1).sum(-1)
            if self.fan_in:
                sq = sq * fan_in(shape)
            a = self.log_concentration[i].detach().to(w).exp() + 0.5 * math.prod(shape)
            b = self.log_rate[i].detach().to(w).exp() + 0.5 * sq
            out[self.site_name(name)] = dist.Gamma(a.expand_as(b), b).sample()
        return out


def forward_draws(net: nn.Module, weights: Mapping[str, Tensor], x: Tensor, chunk_size: int | None = None) -> Tensor:
    """The network's outputs for a batch of weight draws, vectorised with ``vmap``.

    Args:
        net: the network; its own parameter values are not used.
        weights: a draw batch of every parameter of ``net``, ``name -> [S, *shape]`` (other
            entries, e.g. a prior's hyper sites, are ignored).
        x: inputs ``[N, ...]``.
        chunk_size: draws per vectorised call (bounds memory); default all.

    Returns:
        ``[S, N, *out]``, differentiable in ``weights``.
    """
    names = [n for n, _ in net.named_parameters()]
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"weights lacks the network parameter(s) {missing}")
    draws = {n: weights[n] for n in names}
    num = next(iter(draws.values())).shape[0]
    chunk = num if chunk_size is None else max(1, int(chunk_size))

    def one(w: dict[str, Tensor]) -> Tensor:
        return functional_call(net, w, (x,))

    try:
        batched = vmap(one, randomness="different")
        return torch.cat([batched({n: w[s:s + chunk] for n, w in draws.items()}) for s in range(0, num, chunk)], 0)
    except (RuntimeError, NotImplementedError) as err:
        # Some modules (data-dependent control flow, in-place buffer updates) cannot be
        # vmapped; a loop gives the same numbers, only slower.
        warnings.warn(f"vmap over draws failed ({err}); predicting draw by draw", RuntimeWarning, stacklevel=2)
        return torch.stack([one({n: w[i] for n, w in draws.items()}) for i in range(num)])
