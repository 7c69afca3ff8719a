"""The MCMC baseline of LC-PFN: the learning-curve prior as a Pyro model, sampled with NUTS.

LC-PFN (Adriaensen et al., NeurIPS 2023, arXiv:2310.20447) compares against Domhan et al.'s
MCMC (IJCAI 2015) run with the *same* prior ("MCMC-PP"). Here that is
:class:`LearningCurveModel`: the 13 parameters of :mod:`priors.tasks.learning_curves`
(three weights, nine curve parameters, the noise level) with their priors, the prior's
rejection rule as a hard constraint (density zero unless the noise-free curve over all
``length`` epochs satisfies ``f(m) > f(1)`` and ``0 <= f <= 1``), and
``y_t ~ N(f(t), sigma^2)`` at the observed epochs. Domhan et al. used emcee; we use our NUTS
engine (:class:`inference.hmc.NUTS`, several chains). The posterior predictive of a future
epoch is the equal-weight Gaussian mixture ``(1/S) sum_s N(f_s(t), sigma_s^2)`` over the draws
(:func:`posterior_predictive`).

The model has the fast functional form (``log_density``, ``init_params``, ``constrain``), so
the engine samples it without Pyro's tracing. Chains start from the best of
``init_candidates`` draws of the truncated prior, scored by the joint density on
``model.init_data`` when set (Domhan et al. start from a least-squares fit; this is a
sampling-only stand-in that never leaves the prior's support).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor
from torch.distributions import Categorical, Distribution, MixtureSameFamily, Normal, Uniform

from inference.data import check_data
from inference.hmc import NUTS
from inference.posterior import OBS, Posterior
from priors.tasks.learning_curves import (
    CURVE_LENGTH,
    PARAMETERS,
    LearningCurvePrior,
    curve_mean,
    epochs,
    is_valid,
    parameter_distributions,
)

__all__ = ["UNCONSTRAINED", "LearningCurveModel", "MCMCExtrapolation", "extrapolate_mcmc", "mixture_quantile",
           "posterior_predictive"]

# Bisection steps for mixture quantiles: the bracket below is ~40 sigma wide, and 2^-60 of it
# is far below float64 resolution of the curve values.
_BISECTION_STEPS = 60
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# Name of the engines' one site: the 13 unconstrained parameters stacked in PARAMETERS order.
UNCONSTRAINED = "unconstrained"
_SIGMA = list(PARAMETERS).index("sigma")


def _pyro_distribution(d: Distribution) -> dist.Distribution:
    """The Pyro twin of a torch ``Uniform`` / ``LogNormal`` prior (``pyro.sample`` needs Pyro's)."""
    if isinstance(d, Uniform):
        return dist.Uniform(d.low, d.high)
    return dist.LogNormal(d.loc, d.scale)


class LearningCurveModel(PyroModule):
    """LC-PFN's prior and likelihood for one partially observed curve (a bayesnets model).

    ``forward(x, y=None)``: ``x`` ``[N, 1]`` epochs (values in ``[1, length]``), ``y`` ``[N]``.

    Args:
        length: epochs ``m`` of the curves the rejection rule is checked on (100 in the paper).
        init_candidates: prior draws the ``"prior"`` start is chosen from (1: a plain prior draw).

    Attributes:
        init_data: ``(x, y)`` the start is scored on (set by :func:`extrapolate_mcmc`), or ``None``.
    """

    def __init__(self, length: int = CURVE_LENGTH, init_candidates: int = 512) -> None:
        super().__init__()
        if int(length) < 2:
            raise ValueError(f"length must be >= 2, got {length}")
        if int(init_candidates) < 1:
            raise ValueError(f"init_candidates must be >= 1, got {init_candidates}")
        self.length, self.init_candidates = int(length), int(init_candidates)
        self.init_data: tuple[Tensor, Tensor] | None = None
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor, Tensor]] = {}

    # ----------------------------------------------------------------- checks
    def check_data(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Validate epochs ``x`` (``[N]`` or ``[N, 1]``, in ``[1, length]``) and values ``y`` ``[N]``;
        returns ``x`` as ``[N, 1]`` and ``y`` in ``x``'s floating dtype."""
        if isinstance(x, Tensor) and x.dim() == 1:
            x = x.unsqueeze(-1)
        check_data(x, y)
        if x.dim() != 2 or x.shape[1] != 1:
            raise ValueError(f"x must hold epochs as [N] or [N, 1], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        if bool(((x < 1) | (x > self.length)).any()):
            raise ValueError(f"x must hold epochs in [1, length={self.length}], got values in "
                             f"[{float(x.min())}, {float(x.max())}]")
        if y is None:
            return x, None
        if y.dim() != 1:
            raise ValueError(f"y must be [N] curve values, got shape {tuple(y.shape)}")
        return x, y.to(x.dtype)

    # ----------------------------------------------------------------- Pyro model
    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Sample the 13 parameters, enforce the rejection rule, observe ``y`` at epochs ``x``.

        Returns:
            The noise-free curve at ``x``, ``[N]``.
        """
        x, y = self.check_data(x, y)
        params = {n: pyro.sample(n, _pyro_distribution(d)) for n, d in parameter_distributions(x).items()}
        f = curve_mean(params, torch.cat([epochs(self.length, x), x[:, 0]]))
        pyro.factor("truncation", self._truncation(f[..., :self.length]))
        with pyro.plate("data", x.shape[0]):
            pyro.sample(OBS, dist.Normal(f[..., self.length:], params["sigma"][..., None]), obs=y)
        return f[..., self.length:]

    @staticmethod
    def _truncation(f_all: Tensor) -> Tensor:
        """``0`` where the noise-free curve passes the rejection rule, ``-inf`` elsewhere."""
        return torch.where(is_valid(f_all), torch.zeros_like(f_all[..., 0]), torch.full_like(f_all[..., 0], -math.inf))

    # ----------------------------------------------------------------- fast functional form
    # The engines see one site, UNCONSTRAINED = the 13 unconstrained parameters stacked in
    # PARAMETERS order: Pyro's integrator and mass-matrix code loop over sites in Python, so one
    # vector site is an order of magnitude cheaper per leapfrog step than 13 scalar ones.
    # ``constrain`` maps it back to the 13 named sites of ``forward``.

    def _constants(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-parameter ``(is_uniform, a, b)`` ``[13]`` in :data:`PARAMETERS` order, cached per dtype/device."""
        key = (like.dtype, like.device)
        if key not in self._cache:
            kw = dict(dtype=like.dtype, device=like.device)
            self._cache[key] = (torch.tensor([p.kind == "uniform" for p in PARAMETERS.values()], device=like.device),
                                torch.tensor([p.a for p in PARAMETERS.values()], **kw),
                                torch.tensor([p.b for p in PARAMETERS.values()], **kw))
        return self._cache[key]

    def _values(self, z: Tensor) -> Tensor:
        """Unconstrained ``[..., 13]`` -> constrained ``[..., 13]``: a uniform ``U(a, b)`` site is
        ``a + (b - a) sigmoid(z)``, a log-normal one ``exp(z)``."""
        uniform, a, b = self._constants(z)
        # exp only of the log-normal sites: exp of a large uniform z would overflow and its NaN
        # gradient would leak through torch.where.
        return torch.where(uniform, a + (b - a) * torch.sigmoid(z), torch.exp(torch.where(uniform, 0.0, z)))

    def constrain(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{UNCONSTRAINED: [..., 13]}`` -> the 13 named constrained sites, each ``[...]``."""
        return dict(zip(PARAMETERS, self._values(params[UNCONSTRAINED]).unbind(-1), strict=True))

    def unconstrain(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The 13 named constrained sites ``[...]`` -> ``{UNCONSTRAINED: [..., 13]}`` (inverse of :meth:`constrain`)."""
        uniform, a, b = self._constants(params["sigma"])
        v = torch.stack([params[n] for n in PARAMETERS], dim=-1)
        return {UNCONSTRAINED: torch.where(uniform, torch.logit((v - a) / (b - a)),
                                           torch.log(torch.where(uniform, 1.0, v)))}

    def log_density(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        """Log joint density in unconstrained space, Jacobians included: minus Pyro's potential
        energy of :meth:`forward` (written out by hand because it sits in every leapfrog step).

        A uniform site's prior times Jacobian is ``sigmoid(z) (1 - sigmoid(z))``; a log-normal
        site's is the ``N(a, b^2)`` density of ``z``.

        Args:
            params: ``{UNCONSTRAINED: [*batch, 13]}``.
            x: epochs ``[N, 1]``; y: values ``[N]`` (checked by :meth:`check_data`).

        Returns:
            ``[*batch]``; ``-inf`` outside the rejection rule's support.
        """
        z = params[UNCONSTRAINED]
        uniform, a, b = self._constants(z)
        lp = torch.where(uniform, -F.softplus(-z) - F.softplus(z),
                         -0.5 * ((z - a) / b) ** 2 - torch.log(b) - _HALF_LOG_2PI).sum(-1)
        constrained = dict(zip(PARAMETERS, self._values(z).unbind(-1), strict=True))
        f = curve_mean(constrained, torch.cat([epochs(self.length, z), x[:, 0].to(z)]))
        log_sigma = z[..., _SIGMA, None]
        resid = (y.to(z) - f[..., self.length:]) * torch.exp(-log_sigma)
        ll = (-0.5 * resid**2 - log_sigma - _HALF_LOG_2PI).sum(-1)
        return lp + ll + self._truncation(f[..., :self.length])

    def init_params(self, like: Tensor, strategy: str = "prior") -> dict[str, Tensor]:
        """An unconstrained start ``{UNCONSTRAINED: [13]}`` inside the truncated prior's support.

        Args:
            like: dtype/device reference.
            strategy: ``"prior"``: the best of ``init_candidates`` draws of the truncated prior
                (scored by :meth:`log_density` on ``init_data`` when set, else the first draw),
                drawn from torch's global generator (which the engine seeds per chain).
        """
        if strategy != "prior":
            raise ValueError(f"LearningCurveModel supports init='prior' only, got {strategy!r}")
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        prior = LearningCurvePrior().to(device=like.device, dtype=dtype)
        with torch.no_grad():
            draws = prior.sample_parameters(self.init_candidates, self.length)
            z = self.unconstrain(draws)[UNCONSTRAINED]
            best = 0
            if self.init_data is not None:
                x, y = self.check_data(*self.init_data)
                best = int(torch.argmax(self.log_density({UNCONSTRAINED: z}, x, y)))
        return {UNCONSTRAINED: z[best].clone()}


def posterior_predictive(posterior: Posterior, x: Tensor) -> MixtureSameFamily:
    """Posterior predictive of noisy values at epochs ``x`` ``[T]``: per epoch, the equal-weight
    mixture of ``N(f_s(t), sigma_s^2)`` over all ``S`` draws (batch shape ``[T]``)."""
    draws = posterior.flat()
    loc = curve_mean(draws, x.to(draws["sigma"]))  # [S, T]
    scale = draws["sigma"][:, None].expand_as(loc)
    mix = Categorical(logits=torch.zeros(loc.shape[::-1], dtype=loc.dtype, device=loc.device))
    return MixtureSameFamily(mix, Normal(loc.T, scale.T))


def mixture_quantile(mixture: MixtureSameFamily, q: Tensor | float) -> Tensor:
    """Quantiles of a 1-D Gaussian mixture with batch shape ``[T]`` by bisection of its CDF.

    Args:
        q: probabilities ``[Q]`` (or a float) in ``(0, 1)``.

    Returns:
        ``[Q, T]`` (``[T]`` for a float ``q``).
    """
    comp = mixture.component_distribution
    loc, scale = comp.loc, comp.scale  # [T, S]
    qs = torch.as_tensor(q, dtype=loc.dtype, device=loc.device)
    scalar = qs.dim() == 0
    qs = qs.reshape(-1, 1)
    lo = (loc - 20 * scale).min(-1).values.expand(qs.shape[0], -1).clone()
    hi = (loc + 20 * scale).max(-1).values.expand(qs.shape[0], -1).clone()
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        below = mixture.cdf(mid) < qs
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    out = 0.5 * (lo + hi)
    return out[0] if scalar else out


@dataclass
class MCMCExtrapolation:
    """Result of :func:`extrapolate_mcmc`.

    Attributes:
        posterior: the NUTS :class:`~inference.posterior.Posterior` (draws ``[chain, draw]`` per parameter).
        epochs: ``[T]`` the predicted epochs ``n + 1 .. horizon``.
        predictive: :class:`~torch.distributions.MixtureSameFamily` with batch shape ``[T]``.
        seconds: wall time of the fit (warm-up and sampling of all chains).
    """

    posterior: Posterior
    epochs: Tensor
    predictive: MixtureSameFamily
    seconds: float

    def log_prob(self, values: Tensor) -> Tensor:
        """Log predictive density of future values ``[T]`` (per epoch)."""
        return self.predictive.log_prob(values.to(self.epochs))

    def quantile(self, q: Tensor | float) -> Tensor:
        """``[Q, T]`` predictive quantiles."""
        return mixture_quantile(self.predictive, q)


def extrapolate_mcmc(curve: Tensor, horizon: int = CURVE_LENGTH, *, num_chains: int = 4, num_warmup: int = 300,
                     num_samples: int = 300, max_tree_depth: int = 8, target_accept: float = 0.9,
                     dense_mass: bool = False, init_candidates: int = 512, length: int = CURVE_LENGTH, seed: int = 0,
                     progress: bool = False) -> MCMCExtrapolation:
    """Extrapolate a partial curve with NUTS on :class:`LearningCurveModel` (LC-PFN's MCMC-PP baseline).

    Args:
        curve: observed values ``[n]`` at epochs ``1..n`` (on the prior's ``[0, 1]`` scale).
        horizon: last epoch to predict (``n < horizon <= length``).
        num_chains, num_warmup, num_samples, max_tree_depth, target_accept, dense_mass: NUTS settings.
        init_candidates: prior draws each chain's start is chosen from.
        length: curve length the rejection rule is checked on.
        seed: NUTS base seed (chain ``c`` uses ``seed + c``).
        progress: show Pyro's progress bars.

    Returns:
        :class:`MCMCExtrapolation` for epochs ``n + 1 .. horizon``.
    """
    if not isinstance(curve, Tensor) or curve.dim() != 1:
        raise ValueError(f"curve must be a 1-D tensor [n], got {getattr(curve, 'shape', type(curve).__name__)}")
    n = curve.shape[0]
    if not 1 <= n < int(horizon) <= int(length):
        raise ValueError(f"need 1 <= len(curve) < horizon <= length; got len(curve)={n}, horizon={horizon}, "
                         f"length={length}")
    y = curve if curve.is_floating_point() else curve.to(torch.get_default_dtype())
    x = epochs(n, y).unsqueeze(-1)
    model = LearningCurveModel(length, init_candidates)
    model.init_data = (x, y)
    engine = NUTS(num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                  max_tree_depth=max_tree_depth, target_accept=target_accept, dense_mass=dense_mass, seed=seed)
    posterior = engine.fit(model, x, y, progress=progress)
    future = torch.arange(n + 1, int(horizon) + 1, dtype=y.dtype, device=y.device)
    return MCMCExtrapolation(posterior, future, posterior_predictive(posterior, future),
                             float(posterior.attrs["seconds"]))
