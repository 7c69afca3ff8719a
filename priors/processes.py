"""Scale mixtures of NNGPs: heavy-tailed processes from a prior on the last layer's variance.

Lee, Yun, Yang & Lee, "Scale Mixtures of Neural Network Gaussian Processes", ICLR 2022
(arXiv 2107.01408). An infinitely wide network whose last-layer variance is ``σ²`` is the
Gaussian process ``f | σ² ~ GP(0, σ² k)`` with ``k`` its NNGP kernel. A prior on ``σ²`` makes
``f`` a scale mixture of Gaussian processes:

* ``σ² ~ InvGamma(α, β)`` gives the Student-t process with ``2α`` degrees of freedom and scale
  kernel ``(β/α) k`` (:class:`InverseGammaScale`, conjugate: everything is closed form);
* any other positive prior, e.g. Burr type XII (:class:`BurrXIIScale`), is handled by
  importance sampling over ``σ²`` with weights from the Gaussian marginal likelihood;
* a point mass (:class:`FixedScale`) is the NNGP itself.

Observations ``y = f + e`` carry noise ``e ~ N(0, σ² ε I)`` scaled by the same ``σ²`` (the
paper's ``diag_reg``), so that, with ``C = K + ε I``, ``y | σ² ~ N(0, σ² C)``. The data then
enter the scale only through ``n`` and ``q = yᵀ C⁻¹ y``:

    p(y) = N-part · ∫ p(σ²) (σ²)^{-n/2} exp(-q / 2σ²) dσ²,
    N-part = (2π)^{-n/2} |C|^{-1/2},

and the posterior predictive at new points is a scale mixture of the usual GP conditional
``N(k*ᵀC⁻¹y, σ² (k** - k*ᵀC⁻¹k*))`` over the posterior ``p(σ² | y)``; for the inverse-gamma
prior that posterior is ``InvGamma(α + n/2, β + q/2)`` and the predictive is a multivariate t
with ``2α + n`` degrees of freedom and scale ``(2β + q)/(2α + n) · (k** - k*ᵀC⁻¹k*)``.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from gpytorch.constraints import Positive
from gpytorch.kernels import Kernel
from torch import Tensor, nn
from torch.distributions import Distribution, constraints
from torch.distributions import InverseGamma as _TorchInverseGamma

from inference.checks import positive_float

__all__ = [
    "BurrXII",
    "BurrXIIScale",
    "Conditioned",
    "DistributionScale",
    "FixedScale",
    "InverseGamma",
    "InverseGammaScale",
    "ScaleMixtureNNGP",
    "ScalePrior",
    "WeightedScales",
    "gamma_icdf",
    "mixture_log_prob",
    "psd_cholesky",
    "psd_factor",
    "scale_from_normal",
]

_LOG_2PI = math.log(2 * math.pi)

#: Draws of ``σ²`` for importance sampling. The integrand is one-dimensional and cheap (it
#: needs only ``n`` and ``q``), so many draws cost nothing next to the Cholesky factor; with the
#: default proposal 1024 stratified draws reproduce the inverse-gamma closed form to ~1e-8
#: (tests/priors/test_processes.py). The paper used 1000 draws from the prior.
DEFAULT_NUM_SCALE_SAMPLES = 1024
#: Width of the default proposal relative to the Laplace approximation of the likelihood in
#: ``log σ²`` (standard deviation ``sqrt(2/n)``): wide enough that a prior which moves the
#: posterior by a few likelihood widths is still covered.
PROPOSAL_INFLATION = 3.0
#: First jitter tried by :func:`psd_cholesky`, relative to the mean diagonal, and the number
#: of tenfold escalations (1e-10 .. 1e-5 of the diagonal in float64, about the range of
#: linear_operator's ``psd_safe_cholesky`` on a unit-scale kernel).
JITTER_START = {torch.float64: 1e-10, torch.float32: 1e-7}
JITTER_TRIES = 6


# ====================================================================== linear algebra
def _factorised(chol: Tensor, info: Tensor, scale: Tensor) -> bool:
    """Whether ``cholesky_ex`` succeeded on every matrix of the batch with pivots that are not
    round-off: a squared pivot below ``n · eps · scale`` is within the factorisation's backward
    error of zero (Higham, *Accuracy and Stability of Numerical Algorithms*, Thm 10.3), so the
    matrix is numerically singular and whether LAPACK reports success depends on the last bits
    of rounding (an exactly singular kernel matrix factorised on one CPU and failed on another)."""
    if bool(info.any()):
        return False
    n = chol.shape[-1]
    floor = n * torch.finfo(chol.dtype).eps * scale
    return bool((chol.diagonal(dim1=-2, dim2=-1).square().amin(-1) >= floor).all())


def psd_cholesky(matrix: Tensor, what: str = "kernel matrix") -> tuple[Tensor, float]:
    """Lower Cholesky factor of a symmetric PSD ``matrix`` ``[..., n, n]``, with jitter if needed.

    Tries the plain factorisation first, then adds ``jitter · mean(diag) · I`` with jitter
    growing tenfold from :data:`JITTER_START` for :data:`JITTER_TRIES` steps, warning with the
    jitter used. A factorisation counts only when every squared pivot exceeds ``n · eps ·
    mean(diag)`` (below that it is round-off of zero), so a singular matrix gets jitter on every
    machine, not only where LAPACK's rounding happens to give a non-positive pivot.

    Returns:
        ``(L, jitter)`` with ``jitter`` the relative jitter added (0.0 when none was needed).

    Raises:
        ValueError: non-finite entries, or not PSD even with the largest jitter.
    """
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"the {what} has non-finite entries; check the inputs and hyperparameters for inf/NaN")
    scale = matrix.diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp_min(torch.finfo(matrix.dtype).tiny)
    chol, info = torch.linalg.cholesky_ex(matrix)
    if _factorised(chol, info, scale):
        return chol, 0.0
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    jitter = JITTER_START.get(matrix.dtype, 1e-7)
    for _ in range(JITTER_TRIES):
        chol, info = torch.linalg.cholesky_ex(matrix + (jitter * scale)[..., None, None] * eye)
        if _factorised(chol, info, scale):
            warnings.warn(
                f"the {what} was not numerically positive definite; added jitter {jitter:.1e} x mean(diag) "
                "to its diagonal. Increase the noise (or check for duplicated inputs) if this recurs.",
                RuntimeWarning, stacklevel=3,
            )
            return chol, jitter
        jitter *= 10.0
    raise ValueError(
        f"the {what} is not positive definite even with jitter {jitter / 10:.1e} x mean(diag); increase the noise, "
        "remove duplicated inputs or compute in float64"
    )


def psd_factor(matrix: Tensor, what: str = "covariance") -> Tensor:
    """A factor ``F`` ``[..., n, n]`` with ``F Fᵀ = matrix`` for sampling: the Cholesky factor of
    :func:`psd_cholesky` when it exists, else ``V sqrt(max(λ, 0))`` from the symmetric eigen
    decomposition, i.e. the nearest PSD matrix's square root (with a warning).

    Sampling needs no triangular factor, only some square root, and a posterior covariance at
    nearly coincident points (an acquisition optimiser's batch can collapse onto one point)
    can be indefinite by more than any jitter that keeps the variances honest.

    Raises:
        ValueError: non-finite entries.
    """
    try:
        return psd_cholesky(matrix, what)[0]
    except ValueError:
        if not bool(torch.isfinite(matrix).all()):
            raise
    sym = 0.5 * (matrix + matrix.mT)
    eigenvalues, vectors = torch.linalg.eigh(sym)
    clipped = eigenvalues.clamp_min(0.0)
    worst = float((clipped - eigenvalues).max() / sym.diagonal(dim1=-2, dim2=-1).abs().mean().clamp_min(
        torch.finfo(sym.dtype).tiny))
    warnings.warn(f"the {what} is not positive definite (eigenvalues down to -{worst:.1e} x mean(diag)); sampling "
                  "from its nearest positive semi-definite matrix (negative eigenvalues set to 0)",
                  RuntimeWarning, stacklevel=3)
    return vectors * clipped.sqrt().unsqueeze(-2)


# ====================================================================== scale distributions
def _normal_cdf(z: Tensor) -> Tensor:
    """``Φ(z)``, accurate in the lower tail (``torch.special.ndtr`` loses digits below z = -5)."""
    return torch.special.log_ndtr(z).exp()


def gamma_icdf(lower: Tensor, concentration: Tensor, upper: Tensor | None = None) -> Tensor:
    """Quantiles of ``Gamma(concentration, rate=1)``: ``x`` with ``P(concentration, x) = lower``.

    Bisection in ``log x`` (64 halvings of ``[-745, 710]`` reach float64 resolution), vectorised;
    no gradient (torch has no inverse incomplete gamma). Pass ``upper = 1 - lower`` computed
    without cancellation to keep precision in the upper tail.

    Args:
        lower: lower-tail probabilities ``[...]`` in ``(0, 1)``.
        concentration: shape ``α > 0``, broadcastable to ``lower``.
        upper: optional upper-tail probabilities ``[...]``; used where ``upper < lower``.
    """
    with torch.no_grad():
        dtype = lower.dtype
        p = lower.double()
        a = torch.as_tensor(concentration, device=p.device).double().expand_as(p)
        q = (1.0 - p) if upper is None else upper.double().expand_as(p)
        use_upper = q < p
        target = torch.where(use_upper, q, p)
        lo = torch.full_like(p, -745.0)
        hi = torch.full_like(p, 710.0)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            x = mid.exp()
            # going right lowers Q and raises P: move lo up while P < p (or Q > q)
            right = torch.where(use_upper, torch.special.gammaincc(a, x) > target,
                                torch.special.gammainc(a, x) < target)
            lo = torch.where(right, mid, lo)
            hi = torch.where(right, hi, mid)
        return (0.5 * (lo + hi)).exp().to(dtype)


class InverseGamma(_TorchInverseGamma):
    """``InvGamma(concentration, rate)`` with ``cdf`` and ``icdf`` (torch's has neither).

    ``icdf`` is differentiable in ``rate`` only (the gamma quantile is solved numerically).
    """

    def cdf(self, value: Tensor) -> Tensor:
        return torch.special.gammaincc(self.concentration, self.rate / value)

    def icdf(self, value: Tensor) -> Tensor:
        return self.rate / gamma_icdf(1.0 - value, self.concentration, upper=value)

    def from_normal(self, z: Tensor) -> Tensor:
        """``icdf(Φ(z))`` computed from both tails of ``z``, exact far into either tail."""
        upper, lower = _normal_cdf(z), _normal_cdf(-z)  # σ² ≤ v  <=>  G ≥ rate / v
        return self.rate / gamma_icdf(lower, self.concentration, upper=upper)


class BurrXII(Distribution):
    """Burr type XII distribution on ``(0, ∞)`` (scipy's ``burr12(c, d, scale)``).

    Density ``c d / λ · (x/λ)^{c-1} (1 + (x/λ)^c)^{-d-1}``; cdf ``1 - (1 + (x/λ)^c)^{-d}``; its
    right tail decays as ``x^{-cd-1}``, so the mean is finite only for ``cd > 1``.

    Args:
        c: first shape parameter (> 0).
        d: second shape parameter (> 0).
        scale: ``λ`` (> 0).
    """

    arg_constraints: ClassVar[dict] = {"c": constraints.positive, "d": constraints.positive,
                                       "scale": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, c: Tensor | float, d: Tensor | float, scale: Tensor | float = 1.0,
                 validate_args: bool | None = None) -> None:
        self.c, self.d, self.scale = torch.distributions.utils.broadcast_all(c, d, scale)
        super().__init__(self.c.shape, validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_z = value.log() - self.scale.log()
        return (self.c.log() + self.d.log() - self.scale.log() + (self.c - 1) * log_z
                - (self.d + 1) * torch.nn.functional.softplus(self.c * log_z))

    def cdf(self, value: Tensor) -> Tensor:
        return -torch.expm1(-self.d * torch.log1p((value / self.scale) ** self.c))

    def icdf(self, value: Tensor) -> Tensor:
        return self.scale * torch.expm1(-torch.log1p(-value) / self.d) ** (1.0 / self.c)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        u = torch.rand(self._extended_shape(sample_shape), dtype=self.c.dtype, device=self.c.device)
        return self.icdf(u.clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps))

    @property
    def mean(self) -> Tensor:
        cd = self.c * self.d
        inv_c = 1.0 / self.c
        beta = torch.exp(torch.lgamma(self.d - inv_c) + torch.lgamma(1 + inv_c) - torch.lgamma(self.d))
        return torch.where(cd > 1, self.scale * beta, torch.full_like(cd, math.inf))


class WeightedScales(Distribution):
    """A discrete distribution on positive scales ``[S]`` with (unnormalised) log-weights ``[S]``.

    The posterior of ``σ²`` under a non-conjugate prior, as importance sampling leaves it; with
    one atom it is a point mass (the Gaussian case).
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.positive

    def __init__(self, scales: Tensor, log_weights: Tensor | None = None) -> None:
        if scales.dim() != 1 or (log_weights is not None and log_weights.shape != scales.shape):
            raise ValueError(f"scales must be [S] and log_weights [S], got {list(scales.shape)} and "
                             f"{None if log_weights is None else list(log_weights.shape)}")
        self.scales = scales
        lw = torch.zeros_like(scales) if log_weights is None else log_weights
        self.log_weights = lw - torch.logsumexp(lw, 0)
        super().__init__(torch.Size([]), validate_args=False)

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    @property
    def mean(self) -> Tensor:
        return (self.weights * self.scales).sum()

    @property
    def effective_sample_size(self) -> Tensor:
        """Kish's effective sample size ``1 / Σ w²`` of the normalised weights."""
        return 1.0 / self.weights.square().sum()

    def icdf(self, value: Tensor) -> Tensor:
        order = torch.argsort(self.scales)
        cdf = torch.cumsum(self.weights[order], 0)
        idx = torch.searchsorted(cdf.detach(), value.detach().to(cdf.dtype).contiguous())
        return self.scales[order][idx.clamp_max(len(order) - 1)]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        idx = torch.multinomial(self.weights.detach(), max(math.prod(sample_shape), 1), replacement=True)
        return self.scales.detach()[idx].reshape(sample_shape)


def scale_from_normal(mixing: Distribution, z: Tensor) -> Tensor:
    """Draws of a scale distribution from standard-normal base samples ``z``: ``icdf(Φ(z))``."""
    if hasattr(mixing, "from_normal"):
        return mixing.from_normal(z)
    return mixing.icdf(_normal_cdf(z).clamp(torch.finfo(z.dtype).tiny, 1 - torch.finfo(z.dtype).eps))


def mixture_log_prob(value: Tensor, loc: Tensor, variance: Tensor, mixing: Distribution) -> Tensor:
    """Log-density of ``loc + sqrt(σ² variance) z``, ``z ~ N(0, 1)``, ``σ² ~ mixing``, elementwise.

    Student-t for :class:`InverseGamma` mixing (``t_{2a}(loc, (b/a) variance)``), a weighted
    Gaussian mixture for :class:`WeightedScales`.
    """
    if isinstance(mixing, _TorchInverseGamma):
        a, b = mixing.concentration, mixing.rate
        t = torch.distributions.StudentT(2 * a, loc, torch.sqrt(b / a * variance))
        return t.log_prob(value)
    if isinstance(mixing, WeightedScales):
        var = mixing.scales * variance.unsqueeze(-1)  # [..., S]
        logp = -0.5 * (_LOG_2PI + var.log() + (value - loc).unsqueeze(-1).square() / var)
        return torch.logsumexp(logp + mixing.log_weights, -1)
    raise TypeError(f"mixture_log_prob supports InverseGamma and WeightedScales mixing, got {type(mixing).__name__}")


# ====================================================================== scale priors
def _register_positive(module: nn.Module, name: str, value: float | Tensor, learn: bool) -> None:
    """A softplus-constrained scalar parameter ``raw_<name>`` (learnable when ``learn``)."""
    # float64 so that values survive exactly until the owner's .to(dtype)
    v = torch.as_tensor(positive_float(value, name), dtype=torch.float64)
    constraint = Positive()
    module.register_parameter(f"raw_{name}", nn.Parameter(constraint.inverse_transform(v), requires_grad=learn))
    setattr(module, f"raw_{name}_constraint", constraint)


class _PositiveValue:
    """Descriptor: ``module.<name>`` reads ``raw_<name>`` through its constraint; assignment checks and sets it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, module: nn.Module | None, owner: type | None = None) -> Tensor:
        if module is None:
            return self  # type: ignore[return-value]
        return getattr(module, f"raw_{self.name}_constraint").transform(getattr(module, f"raw_{self.name}"))

    def __set__(self, module: nn.Module, value: float | Tensor) -> None:
        raw = getattr(module, f"raw_{self.name}")
        v = torch.as_tensor(positive_float(value, self.name), dtype=raw.dtype, device=raw.device)
        with torch.no_grad():
            raw.copy_(getattr(module, f"raw_{self.name}_constraint").inverse_transform(v))


class ScalePrior(nn.Module, ABC):
    """A prior on the last-layer variance ``σ²``; its hyperparameters are (learnable) parameters.

    Subclasses give :meth:`distribution`; the evidence integral over ``σ²`` defaults to
    importance sampling (:meth:`evidence`), which conjugate priors override with closed forms.

    Args:
        num_samples: importance-sampling draws of ``σ²``.
        proposal: ``"likelihood"`` (default): stratified draws from a logistic distribution in
            ``log σ²`` centred at the likelihood's mode ``q/n`` and :data:`PROPOSAL_INFLATION`
            times wider than its Laplace approximation, weights ``prior × likelihood / proposal``;
            ``"prior"``: stratified quantiles of the prior, weights ``likelihood`` (the paper's
            estimator; poor when the data pin ``σ²`` down much more tightly than the prior).
    """

    def __init__(self, num_samples: int = DEFAULT_NUM_SCALE_SAMPLES, proposal: str = "likelihood") -> None:
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if proposal not in ("likelihood", "prior"):
            raise ValueError(f"proposal must be 'likelihood' or 'prior', got {proposal!r}")
        self.num_samples = num_samples
        self.proposal = proposal

    @abstractmethod
    def distribution(self) -> Distribution:
        """The prior of ``σ²`` under the current hyperparameters (a scalar distribution)."""

    def evidence(self, q: Tensor, n: int) -> tuple[Tensor, Distribution]:
        """``log ∫ p(σ²) (σ²)^{-n/2} exp(-q/2σ²) dσ²`` and the posterior of ``σ²``.

        Args:
            q: ``yᵀ C⁻¹ y`` (scalar tensor).
            n: number of observations.

        Returns:
            ``(log_evidence, posterior)`` — the posterior a :class:`WeightedScales` here.
        """
        prior = self.distribution()
        u = (torch.arange(self.num_samples, dtype=q.dtype, device=q.device) + 0.5) / self.num_samples
        if self.proposal == "prior":
            scales = prior.icdf(u)
            log_w = torch.zeros_like(scales)
        else:
            centre = torch.log((q / n).clamp_min(torch.finfo(q.dtype).tiny))
            width = PROPOSAL_INFLATION * math.sqrt(2.0 / max(n, 1)) * math.sqrt(3.0) / math.pi  # logistic scale
            t = centre + width * torch.logit(u)
            scales = t.exp()
            # logistic log-density in t = log σ², minus t for the change of variables to σ²
            e = (t - centre) / width
            log_proposal = -e - math.log(width) - 2 * torch.nn.functional.softplus(-e) - t
            log_w = prior.log_prob(scales) - log_proposal
        log_lik = -0.5 * n * scales.log() - 0.5 * q / scales
        log_w = log_w + log_lik
        log_evidence = torch.logsumexp(log_w, 0) - math.log(self.num_samples)
        return log_evidence, WeightedScales(scales, log_w)


class InverseGammaScale(ScalePrior):
    """``σ² ~ InvGamma(alpha, beta)``: the Student-t process with ``2 alpha`` degrees of freedom.

    Args:
        alpha: shape (> 0); the process has ``2 alpha`` degrees of freedom.
        beta: rate (> 0); ``beta / alpha`` is the scale of the t-process kernel.
        learn_alpha, learn_beta: make the hyperparameter learnable (``requires_grad``).
    """

    def __init__(self, alpha: float | Tensor = 2.0, beta: float | Tensor = 2.0, learn_alpha: bool = True,
                 learn_beta: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        _register_positive(self, "alpha", alpha, learn_alpha)
        _register_positive(self, "beta", beta, learn_beta)

    alpha = _PositiveValue()
    beta = _PositiveValue()

    def distribution(self) -> InverseGamma:
        return InverseGamma(self.alpha, self.beta, validate_args=False)

    def evidence(self, q: Tensor, n: int) -> tuple[Tensor, Distribution]:
        a, b = self.alpha.to(q), self.beta.to(q)
        a_post, b_post = a + 0.5 * n, b + 0.5 * q
        log_evidence = a * b.log() - torch.lgamma(a) + torch.lgamma(a_post) - a_post * b_post.log()
        return log_evidence, InverseGamma(a_post, b_post, validate_args=False)


class FixedScale(ScalePrior):
    """A point mass ``σ² = scale``: the NNGP itself (``scale`` learnable by default)."""

    def __init__(self, scale: float | Tensor = 1.0, learn_scale: bool = True) -> None:
        super().__init__(num_samples=1)
        _register_positive(self, "scale", scale, learn_scale)

    scale = _PositiveValue()

    def distribution(self) -> WeightedScales:
        return WeightedScales(self.scale.reshape(1))

    def evidence(self, q: Tensor, n: int) -> tuple[Tensor, Distribution]:
        s = self.scale.to(q)
        return -0.5 * n * s.log() - 0.5 * q / s, WeightedScales(s.reshape(1))


class BurrXIIScale(ScalePrior):
    """``σ² ~ BurrXII(c, d, scale)``, by importance sampling (the paper's second heavy-tailed prior).

    Args:
        c, d: shape parameters (> 0); the prior's tail is ``x^{-cd-1}``.
        scale: ``λ`` (> 0).
        learn_shape: make ``c`` and ``d`` learnable (default: fixed, like ``alpha`` is often held).
        learn_scale: make ``scale`` learnable.
        **kwargs: ``num_samples``, ``proposal`` of :class:`ScalePrior`.
    """

    def __init__(self, c: float | Tensor = 2.0, d: float | Tensor = 1.0, scale: float | Tensor = 1.0,
                 learn_shape: bool = False, learn_scale: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        _register_positive(self, "c", c, learn_shape)
        _register_positive(self, "d", d, learn_shape)
        _register_positive(self, "scale", scale, learn_scale)

    c = _PositiveValue()
    d = _PositiveValue()
    scale = _PositiveValue()

    def distribution(self) -> BurrXII:
        return BurrXII(self.c, self.d, self.scale)


class DistributionScale(ScalePrior):
    """Any fixed positive torch distribution as the prior of ``σ²`` (always by importance sampling).

    It needs ``log_prob`` (and ``icdf`` for ``proposal="prior"``).
    """

    def __init__(self, distribution: Distribution, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(distribution, Distribution) or distribution.batch_shape != torch.Size([]) \
                or distribution.event_shape != torch.Size([]):
            raise TypeError(f"distribution must be a scalar torch Distribution, got {distribution!r}")
        self._distribution = distribution

    def distribution(self) -> Distribution:
        return self._distribution


# ====================================================================== the process
@dataclass
class Conditioned:
    """A scale-mixture process conditioned on ``(X, y)``: what every prediction reuses.

    Attributes:
        train_X: ``[n, d]`` inputs.
        chol: ``[n, n]`` lower Cholesky factor of ``C = K + ε I``.
        weights: ``[n]`` ``C⁻¹ y``.
        quad: ``yᵀ C⁻¹ y``.
        noise: ``ε``.
        mixing: posterior of ``σ²`` (:class:`InverseGamma` or :class:`WeightedScales`).
        log_marginal: ``log p(y)``.
        jitter: relative jitter the Cholesky factor needed (0.0 when none).
    """

    train_X: Tensor
    chol: Tensor
    weights: Tensor
    quad: Tensor
    noise: Tensor
    mixing: Distribution
    log_marginal: Tensor
    jitter: float


def _dense(value) -> Tensor:
    return value.to_dense() if hasattr(value, "to_dense") else value


class ScaleMixtureNNGP(nn.Module):
    """``f | σ² ~ GP(0, σ² k)``, ``σ² ~ scale_prior``: the scale mixture of an NNGP (arXiv 2107.01408).

    Args:
        kernel: a GPyTorch kernel, usually :class:`priors.kernels.NNGPKernel`.
        scale_prior: a :class:`ScalePrior`; a torch ``InverseGamma`` becomes the exact
            :class:`InverseGammaScale` (held fixed), any other scalar positive distribution a
            :class:`DistributionScale` (importance sampling).

    Example:
        >>> process = ScaleMixtureNNGP(NNGPKernel(depth=3), InverseGammaScale(alpha=2.0, beta=2.0))
        >>> cond = process.condition(X, y, noise=0.01)
        >>> loc, cov, mixing = process.predict(cond, X_test)  # f* = loc + sqrt(σ²) chol(cov) z
    """

    def __init__(self, kernel: Kernel, scale_prior: ScalePrior | Distribution) -> None:
        super().__init__()
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a gpytorch Kernel, got {type(kernel).__name__}")
        if isinstance(scale_prior, _TorchInverseGamma):
            scale_prior = InverseGammaScale(scale_prior.concentration, scale_prior.rate, False, False)
        elif isinstance(scale_prior, Distribution):
            scale_prior = DistributionScale(scale_prior)
        if not isinstance(scale_prior, ScalePrior):
            raise TypeError(f"scale_prior must be a ScalePrior or a torch Distribution, "
                            f"got {type(scale_prior).__name__}")
        self.kernel = kernel
        self.scale_prior = scale_prior

    def covariance(self, X: Tensor, noise: Tensor | float = 0.0) -> Tensor:
        """Unit-scale covariance ``C = K(X, X) + noise I`` ``[..., n, n]``."""
        K = _dense(self.kernel(X, X))
        eye = torch.eye(X.shape[-2], dtype=K.dtype, device=K.device)
        return K + torch.as_tensor(noise, dtype=K.dtype, device=K.device) * eye

    def sample(self, X: Tensor, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """Prior draws of ``f`` at ``X`` ``[n, d]``: ``[*sample_shape, n]`` (``σ²`` drawn per sample)."""
        chol, _ = psd_cholesky(self.covariance(X).detach(), "prior kernel matrix")
        prior = self.scale_prior.distribution()
        sigma2 = prior.sample(sample_shape).to(chol)
        z = torch.randn(*sample_shape, X.shape[-2], dtype=chol.dtype, device=chol.device)
        return sigma2.sqrt().unsqueeze(-1) * (z @ chol.mT)

    def condition(self, X: Tensor, y: Tensor, noise: Tensor | float) -> Conditioned:
        """Condition on observations ``y`` ``[n]`` at ``X`` ``[n, d]`` with relative noise ``ε``."""
        noise = torch.as_tensor(noise, dtype=X.dtype, device=X.device)
        chol, jitter = psd_cholesky(self.covariance(X, noise), "training covariance K + noise I")
        weights = torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)
        quad = (y * weights).sum()
        n = y.shape[-1]
        log_evidence, mixing = self.scale_prior.evidence(quad, n)
        log_marginal = log_evidence - 0.5 * n * _LOG_2PI - chol.diagonal().log().sum()
        return Conditioned(X, chol, weights, quad, noise, mixing, log_marginal, jitter)

    def log_marginal_likelihood(self, X: Tensor, y: Tensor, noise: Tensor | float) -> Tensor:
        """``log p(y)`` for ``y`` ``[n]`` at ``X`` ``[n, d]`` (exact, or importance-sampled)."""
        return self.condition(X, y, noise).log_marginal

    def predict(self, cond: Conditioned, X: Tensor,
                observation_noise: bool = False) -> tuple[Tensor, Tensor, Distribution]:
        """Posterior predictive at ``X`` ``[..., m, d]``: ``f* = loc + sqrt(σ²) chol(cov) z``.

        Returns:
            ``loc`` ``[..., m]``, unit-scale ``cov`` ``[..., m, m]`` (plus ``ε I`` when
            ``observation_noise``), and the posterior ``mixing`` distribution of ``σ²``.
        """
        k_star = _dense(self.kernel(X, cond.train_X))  # [..., m, n]
        loc = k_star @ cond.weights
        v = torch.linalg.solve_triangular(cond.chol, k_star.mT, upper=False)  # [..., n, m]
        cov = _dense(self.kernel(X, X)) - v.mT @ v
        if observation_noise:
            cov = cov + cond.noise * torch.eye(X.shape[-2], dtype=cov.dtype, device=cov.device)
        return loc, cov, cond.mixing
