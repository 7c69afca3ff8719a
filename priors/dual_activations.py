"""Dual activations: Gaussian expectations of an activation that infinite-width kernels need.

For an elementwise activation ``φ`` and a centred bivariate normal ``(u, v)`` with covariance
``[[k11, k12], [k12, k22]]``, the NNGP recursion needs ``E[φ(u) φ(v)]`` and the NTK recursion
needs ``E[φ'(u) φ'(v)]`` (Jacot et al., arXiv 1806.07572). This module holds those maps:

* :class:`ArcCosine` — ReLU, leaky ReLU and ``|x|`` in closed form (Cho & Saul's arc-cosine
  kernel of order 1, NeurIPS 2009), with a custom autograd rule that is finite at ``|ρ| = 1``;
* :class:`Erf` — the closed form of Williams (1997);
* :class:`Quadrature` — any elementwise activation by a 2-D Gauss rule in polar coordinates
  (Gauss–Laguerre in the radius, Gauss–Legendre in the angle, split at the kinks of ``φ`` at 0),
  batched and differentiable;
* :func:`gaussian_expectation` — the 1-D ``E[h(√k z)]`` used by criticality (arXiv 2106.10165).

Shapes: ``k12`` is ``[..., n1, n2]``; ``k11`` broadcasts against it (``[..., n1, 1]``) and so
does ``k22`` (``[..., 1, n2]``).
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from scipy.special import roots_genlaguerre, roots_legendre
from torch import Tensor

__all__ = [
    "ArcCosine",
    "DualActivation",
    "Erf",
    "Quadrature",
    "arccos_j",
    "as_dual",
    "gaussian_expectation",
    "safe_arccos",
]

Activation = Callable[[Tensor], Tensor]

#: Variances below ``tiny ** VARIANCE_FLOOR_POWER`` are treated as zero when normalising to a
#: correlation: large enough that ``1 / (s1 * s2)`` stays finite in float32 and float64, small
#: enough never to change a value that is not already zero to working precision.
VARIANCE_FLOOR_POWER = 0.5

#: Default quadrature sizes (radial Gauss–Laguerre nodes, angular Gauss–Legendre nodes per arc).
#: ReLU-type activations are integrated exactly by any size. For saturating activations the
#: radial rule limits accuracy as the variance grows; measured against the erf closed form in
#: float64: 1e-13 for variances <= 1, 1e-9 at 2, 1e-5 at 5 (raise ``num_radial`` for more).
DEFAULT_RADIAL_NODES = 32
DEFAULT_ANGULAR_NODES = 16

#: Entries per quadrature chunk (each entry costs ``2 * radial * 3 * angular`` evaluations).
QUADRATURE_CHUNK = 2048


def _safe_sqrt(k: Tensor) -> Tensor:
    """``sqrt(k)`` floored so that correlations ``k12 / (s1 s2)`` and their gradients stay finite at 0."""
    floor = torch.finfo(k.dtype).tiny ** VARIANCE_FLOOR_POWER
    return k.clamp_min(floor).sqrt()


def _correlation(k12: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
    """``k12 / (s1 s2)`` clamped to ``[-1, 1]`` (rounding can leave it just outside)."""
    return (k12 / (s1 * s2)).clamp(-1.0, 1.0)


class _UnaryFunction(torch.autograd.Function):
    """An elementwise autograd function of one tensor that saves its input for the backward pass."""

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])


class _SafeArccos(_UnaryFunction):
    """``arccos`` on ``[-1, 1]`` whose derivative is floored away from ``-inf`` at ``ρ = ±1``.

    At ``x = x'`` the correlation is 1 for every hyperparameter value, so its gradient is 0 and
    the chain rule meets ``0 * inf = NaN``; a finite (huge) slope turns that into the correct 0.
    """

    @staticmethod
    def forward(rho: Tensor) -> Tensor:
        return torch.arccos(rho.clamp(-1.0, 1.0))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (rho,) = ctx.saved_tensors
        floor = torch.finfo(rho.dtype).eps ** 2
        return -grad * torch.rsqrt((1.0 - rho * rho).clamp_min(floor))


def safe_arccos(rho: Tensor) -> Tensor:
    """``arccos(ρ)`` with a finite gradient at ``ρ = ±1`` (see :class:`_SafeArccos`)."""
    return _SafeArccos.apply(rho)


class _ArcCosJ(_UnaryFunction):
    """``J(ρ) = sqrt(1 - ρ²) + (π - arccos ρ) ρ`` with ``J'(ρ) = π - arccos ρ``.

    Autograd through ``sqrt`` and ``arccos`` gives ``inf * 0`` at ``ρ = ±1``; the derivative of the
    sum is finite there, so we supply it (it is also ``2π`` times ReLU's ``E[φ'(u) φ'(v)]``).
    """

    @staticmethod
    def forward(rho: Tensor) -> Tensor:
        return torch.sqrt((1.0 - rho * rho).clamp_min(0.0)) + (math.pi - torch.arccos(rho)) * rho

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (rho,) = ctx.saved_tensors
        return grad * (math.pi - safe_arccos(rho))


def arccos_j(rho: Tensor) -> Tensor:
    """Cho & Saul's order-1 angular function ``J(ρ) = sin θ + (π - θ) cos θ`` with ``cos θ = ρ``.

    Args:
        rho: correlations in ``[-1, 1]``, any shape.

    Returns:
        ``J(ρ)``, same shape; ``E[relu(u) relu(v)] = sqrt(k11 k22) J(ρ) / (2π)``.
    """
    return _ArcCosJ.apply(rho)


class DualActivation(ABC):
    """Gaussian-expectation maps of one elementwise activation ``φ``."""

    #: short name used in reprs and error messages
    name: str = "activation"

    @abstractmethod
    def activation(self, x: Tensor) -> Tensor:
        """``φ(x)`` elementwise (used by Monte Carlo checks, criticality and finite networks)."""

    @abstractmethod
    def cross(self, k12: Tensor, k11: Tensor, k22: Tensor, deriv: bool = False) -> tuple[Tensor, Tensor | None]:
        """``E[φ(u) φ(v)]`` and, if ``deriv``, ``E[φ'(u) φ'(v)]``.

        Args:
            k12: covariances ``[..., n1, n2]``.
            k11: variances of ``u``, broadcastable to ``k12`` (``[..., n1, 1]``).
            k22: variances of ``v``, broadcastable to ``k12`` (``[..., 1, n2]``).
            deriv: also return the derivative map (for the NTK).
        """

    @abstractmethod
    def diag(self, k: Tensor, deriv: bool = False) -> tuple[Tensor, Tensor | None]:
        """``E[φ(u)²]`` and, if ``deriv``, ``E[φ'(u)²]`` for ``u ~ N(0, k)``, elementwise in ``k``."""

    def derivative(self, x: Tensor) -> Tensor:
        """``φ'(x)`` elementwise (forward-mode autodiff unless a subclass knows better)."""
        return torch.func.jvp(self.activation, (x,), (torch.ones_like(x),))[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ArcCosine(DualActivation):
    """``φ(x) = max(x, 0) + α min(x, 0)``: ReLU (``α = 0``), leaky ReLU, ``|x|`` (``α = -1``).

    Writing ``φ = α x + (1 - α) relu(x)`` gives (Cho & Saul 2009; arXiv 1806.07572)::

        E[φ(u) φ(v)]   = α k12 + (1 - α)² / (2π) · sqrt(k11 k22) · J(ρ)
        E[φ'(u) φ'(v)] = α     + (1 - α)² / (2π) · (π - arccos ρ)

    with ``ρ = k12 / sqrt(k11 k22)``. Both are finite, with finite gradients, at ``ρ = ±1``
    and at zero variance.
    """

    def __init__(self, negative_slope: float = 0.0) -> None:
        if not math.isfinite(negative_slope):
            raise ValueError(f"negative_slope must be finite, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)
        self.name = {0.0: "relu", -1.0: "abs"}.get(self.negative_slope, f"leaky_relu({self.negative_slope:g})")

    @property
    def _relu_coef(self) -> float:
        """``(1 - α)² / (2π)``: weight of the arc-cosine part."""
        return (1.0 - self.negative_slope) ** 2 / (2.0 * math.pi)

    def activation(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, x, self.negative_slope * x)

    def derivative(self, x: Tensor) -> Tensor:
        one = torch.ones_like(x)
        return torch.where(x > 0, one, self.negative_slope * one)

    def cross(self, k12: Tensor, k11: Tensor, k22: Tensor, deriv: bool = False) -> tuple[Tensor, Tensor | None]:
        s1, s2 = _safe_sqrt(k11), _safe_sqrt(k22)
        rho = _correlation(k12, s1, s2)
        value = self._relu_coef * (s1 * s2) * arccos_j(rho)
        if self.negative_slope != 0.0:
            value = value + self.negative_slope * k12
        if not deriv:
            return value, None
        return value, self.negative_slope + self._relu_coef * (math.pi - safe_arccos(rho))

    def diag(self, k: Tensor, deriv: bool = False) -> tuple[Tensor, Tensor | None]:
        # J(1) = π and arccos(1) = 0: E[φ²] = (1 + α²)/2 · k, E[φ'²] = (1 + α²)/2.
        half_gain = (1.0 + self.negative_slope**2) / 2.0
        return half_gain * k, (torch.full_like(k, half_gain) if deriv else None)

    def cross_(self, k12: Tensor, s1: Tensor, s2: Tensor, deriv_out: Tensor | None, scratch: Tensor) -> None:
        """In-place :meth:`cross` for the no-grad fast path: ``k12`` is overwritten with ``E[φ(u)φ(v)]``.

        Args:
            k12: covariances ``[..., b, n2]``, overwritten.
            s1: square roots of the row variances ``[..., b, 1]`` (already floored).
            s2: square roots of the column variances ``[..., 1, n2]``.
            deriv_out: if given, receives ``E[φ'(u) φ'(v)]`` (same shape as ``k12``).
            scratch: a work buffer shaped like ``k12``.
        """
        alpha, coef = self.negative_slope, self._relu_coef
        linear = k12.clone() if alpha != 0.0 else None
        rho = k12.mul_(s1.reciprocal()).mul_(s2.reciprocal()).clamp_(-1.0, 1.0)
        theta = torch.arccos(rho, out=scratch)
        if deriv_out is not None:
            torch.sub(math.pi, theta, out=deriv_out).mul_(coef).add_(alpha)
        # J = sqrt(1 - ρ²) - (θ - π) ρ, assembled in the two buffers we have; |ρ| <= 1 after the
        # clamp, so 1 - ρ² >= 0 in floating point too.
        theta.sub_(math.pi).mul_(rho)
        rho.mul_(rho).sub_(1.0).neg_().sqrt_().sub_(theta)
        rho.mul_(s1 * coef).mul_(s2)
        if linear is not None:
            rho.add_(linear, alpha=alpha)


class Erf(DualActivation):
    """``φ = erf`` (Williams 1997): ``E[φ(u)φ(v)] = (2/π) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22)))``.

    The derivative map is ``E[φ'(u) φ'(v)] = (4/π) / sqrt((1 + 2 k11)(1 + 2 k22) - 4 k12²)``.
    The arcsin argument is strictly inside ``(-1, 1)``, so no clamping is needed.
    """

    name = "erf"

    def activation(self, x: Tensor) -> Tensor:
        return torch.erf(x)

    def derivative(self, x: Tensor) -> Tensor:
        return (2.0 / math.sqrt(math.pi)) * torch.exp(-x * x)

    def cross(self, k12: Tensor, k11: Tensor, k22: Tensor, deriv: bool = False) -> tuple[Tensor, Tensor | None]:
        a1, a2 = 1.0 + 2.0 * k11, 1.0 + 2.0 * k22
        value = (2.0 / math.pi) * torch.arcsin(2.0 * k12 / torch.sqrt(a1 * a2))
        if not deriv:
            return value, None
        det = (a1 * a2 - 4.0 * k12 * k12).clamp_min(torch.finfo(k12.dtype).tiny)
        return value, (4.0 / math.pi) * torch.rsqrt(det)

    def diag(self, k: Tensor, deriv: bool = False) -> tuple[Tensor, Tensor | None]:
        a = 1.0 + 2.0 * k
        value = (2.0 / math.pi) * torch.arcsin(2.0 * k / a)
        return value, ((4.0 / math.pi) * torch.rsqrt(1.0 + 4.0 * k) if deriv else None)


@functools.cache
def _rules(num_radial: int, num_angular: int) -> tuple[tuple[float, ...], ...]:
    """Gauss–Laguerre (α = 0) nodes/weights and Gauss–Legendre nodes/weights, as Python floats."""
    s, w = roots_genlaguerre(num_radial, 0.0)
    xi, lam = roots_legendre(num_angular)
    return tuple(s.tolist()), tuple(w.tolist()), tuple(xi.tolist()), tuple(lam.tolist())


class Quadrature(DualActivation):
    """Any elementwise activation, by Gauss quadrature of the 2-D Gaussian expectation.

    With ``(z1, z2) = r (cos t, sin t)``, ``r ∈ ℝ``, ``t ∈ [0, π)``, and ``cos θ = ρ``::

        E[f(u) g(v)] = 1/(2π) ∫_0^π dt ∫_ℝ |r| e^{-r²/2} f(a r cos t) g(b r cos(t - θ)) dr

    with ``a = sqrt(k11)``, ``b = sqrt(k22)``. The radial integral is a Gauss–Laguerre rule in
    ``s = r²/2`` applied to ``h(r) + h(-r)`` (even in ``r``, so smooth activations converge
    exponentially and positively homogeneous ones are integrated exactly); the angular integral is
    split at the kinks ``cos t = 0`` and ``cos(t - θ) = 0`` (where an activation with a kink at
    0 is non-smooth) and each arc gets a Gauss–Legendre rule. For ReLU this reproduces the
    arc-cosine closed form to rounding error.

    Args:
        fn: the activation, a differentiable elementwise torch function.
        name: name for reprs.
        derivative: ``φ'``; default forward-mode autodiff of ``fn``.
        num_radial: Gauss–Laguerre nodes.
        num_angular: Gauss–Legendre nodes per angular arc (three arcs).
    """

    def __init__(
        self,
        fn: Activation,
        name: str | None = None,
        derivative: Activation | None = None,
        num_radial: int = DEFAULT_RADIAL_NODES,
        num_angular: int = DEFAULT_ANGULAR_NODES,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be a callable elementwise activation, got {type(fn).__name__}")
        for arg, value in (("num_radial", num_radial), ("num_angular", num_angular)):
            if int(value) != value or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self._derivative = derivative
        self.num_radial = int(num_radial)
        self.num_angular = int(num_angular)

    def activation(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def derivative(self, x: Tensor) -> Tensor:
        if self._derivative is not None:
            return self._derivative(x)
        return super().derivative(x)

    def _values(self, x: Tensor, deriv: bool) -> tuple[Tensor, Tensor | None]:
        if not deriv:
            return self.fn(x), None
        if self._derivative is not None:
            return self.fn(x), self._derivative(x)
        return torch.func.jvp(self.fn, (x,), (torch.ones_like(x),))

    def _nodes(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s, w, xi, lam = _rules(self.num_radial, self.num_angular)
        kw = {"dtype": like.dtype, "device": like.device}
        r = torch.tensor(s, **kw).mul(2.0).sqrt()
        radius = torch.cat([r, -r])  # [2m]: h(r) + h(-r)
        radial_w = torch.tensor(w, **kw).repeat(2)
        return radius, radial_w, torch.tensor(xi, **kw), torch.tensor(lam, **kw)

    def _expect(self, a: Tensor, b: Tensor, rho: Tensor, deriv: bool) -> tuple[Tensor, Tensor | None]:
        """Quadrature on flat ``[E]`` tensors of standard deviations and correlations."""
        radius, radial_w, xi, lam = self._nodes(rho)
        theta = safe_arccos(rho)
        # Break points in [0, π): where cos t = 0 and where cos(t - θ) = 0. They only place
        # nodes; the integrand is continuous across them, so they carry no gradient.
        kink1 = torch.full_like(theta, math.pi / 2)
        kink2 = torch.remainder(theta.detach() + math.pi / 2, math.pi)
        lo, hi = torch.minimum(kink1, kink2), torch.maximum(kink1, kink2)
        edges = torch.stack([torch.zeros_like(lo), lo, hi, torch.full_like(hi, math.pi)], dim=-1)  # [E, 4]
        left, right = edges[:, :-1, None], edges[:, 1:, None]  # [E, 3, 1]
        half = (right - left) / 2
        t = (left + right) / 2 + half * xi  # [E, 3, q]
        t_w = (half * lam).flatten(1)  # [E, 3q]
        t = t.flatten(1)
        cu = torch.cos(t)
        cv = torch.cos(t - theta[:, None])
        u = (a[:, None] * cu)[..., None] * radius  # [E, 3q, 2m]
        v = (b[:, None] * cv)[..., None] * radius
        fu, du = self._values(u, deriv)
        fv, dv = self._values(v, deriv)
        weights = t_w[..., None] * radial_w / (2.0 * math.pi)  # [E, 3q, 2m]
        value = (fu * fv * weights).sum((-1, -2))
        return value, ((du * dv * weights).sum((-1, -2)) if deriv else None)

    def _chunked(self, a: Tensor, b: Tensor, rho: Tensor, deriv: bool) -> tuple[Tensor, Tensor | None]:
        shape = torch.broadcast_shapes(a.shape, b.shape, rho.shape)
        a, b, rho = (t.expand(shape).reshape(-1) for t in (a, b, rho))
        values, derivs = [], []
        for start in range(0, rho.numel(), QUADRATURE_CHUNK):
            sl = slice(start, start + QUADRATURE_CHUNK)
            v, d = self._expect(a[sl], b[sl], rho[sl], deriv)
            values.append(v)
            derivs.append(d)
        value = torch.cat(values).reshape(shape) if values else rho.new_zeros(shape)
        if not deriv:
            return value, None
        return value, (torch.cat(derivs).reshape(shape) if derivs else rho.new_zeros(shape))

    def cross(self, k12: Tensor, k11: Tensor, k22: Tensor, deriv: bool = False) -> tuple[Tensor, Tensor | None]:
        s1, s2 = _safe_sqrt(k11), _safe_sqrt(k22)
        return self._chunked(s1, s2, _correlation(k12, s1, s2), deriv)

    def diag(self, k: Tensor, deriv: bool = False) -> tuple[Tensor, Tensor | None]:
        s = _safe_sqrt(k)
        return self._chunked(s, s, torch.ones_like(s), deriv)


def _gelu(x: Tensor) -> Tensor:
    return torch.nn.functional.gelu(x)


def _silu(x: Tensor) -> Tensor:
    return torch.nn.functional.silu(x)


def _softplus(x: Tensor) -> Tensor:
    return torch.nn.functional.softplus(x)


def _elu(x: Tensor) -> Tensor:
    return torch.nn.functional.elu(x)


#: activations available by name through quadrature
_QUADRATURE_ACTIVATIONS: dict[str, Activation] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "sin": torch.sin,
    "cos": torch.cos,
    "gelu": _gelu,
    "silu": _silu,
    "swish": _silu,
    "softplus": _softplus,
    "elu": _elu,
}


def as_dual(activation: str | DualActivation | Activation, **kwargs) -> DualActivation:
    """Resolve an activation given by name, as a :class:`DualActivation`, or as a callable.

    Args:
        activation: ``"relu"``, ``"leaky_relu"`` (``negative_slope=`` keyword, default 0.01),
            ``"abs"``, ``"erf"`` (closed forms); ``"tanh"``, ``"sigmoid"``, ``"sin"``, ``"cos"``,
            ``"gelu"``, ``"silu"``/``"swish"``, ``"softplus"``, ``"elu"`` (quadrature); a
            :class:`DualActivation`; or any elementwise callable (quadrature).
        **kwargs: ``negative_slope`` for leaky ReLU; quadrature options for the others.
    """
    if isinstance(activation, DualActivation):
        if kwargs:
            raise TypeError(f"options {sorted(kwargs)} cannot be applied to an existing {activation!r}")
        return activation
    if isinstance(activation, str):
        key = activation.lower()
        if key == "relu":
            return ArcCosine(0.0, **kwargs)
        if key == "leaky_relu":
            return ArcCosine(kwargs.pop("negative_slope", 0.01), **kwargs)
        if key == "abs":
            return ArcCosine(-1.0, **kwargs)
        if key == "erf":
            return Erf(**kwargs)
        if key in _QUADRATURE_ACTIVATIONS:
            return Quadrature(_QUADRATURE_ACTIVATIONS[key], name=key, **kwargs)
        known = ["relu", "leaky_relu", "abs", "erf", *_QUADRATURE_ACTIVATIONS]
        raise ValueError(f"activation must be one of {known} or a callable, got {activation!r}")
    if callable(activation):
        return Quadrature(activation, **kwargs)
    raise TypeError(f"activation must be a name, a DualActivation or a callable, got {type(activation).__name__}")


@functools.cache
def _half_line_rule(num_nodes: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Generalised Gauss–Laguerre (α = -1/2) nodes and weights."""
    s, w = roots_genlaguerre(num_nodes, -0.5)
    return tuple(s.tolist()), tuple(w.tolist())


def gaussian_expectation(fn: Activation, variance: Tensor, num_nodes: int = 48) -> Tensor:
    """``E[fn(sqrt(variance) z)]`` for ``z ~ N(0, 1)``, elementwise in ``variance``.

    Uses ``E[h(z)] = 1/(2 sqrt(π)) ∫_0^∞ (h(√(2s)) + h(-√(2s))) s^{-1/2} e^{-s} ds`` with a
    generalised Gauss–Laguerre rule: exact for ``h`` piecewise polynomial with its kink at 0
    (ReLU moments), exponentially convergent for smooth ``h``. Differentiable in ``variance``.

    Args:
        fn: elementwise function.
        variance: ``[...]`` non-negative variances.
        num_nodes: Gauss–Laguerre nodes.

    Returns:
        ``[...]`` expectations.
    """
    s, w = _half_line_rule(int(num_nodes))
    kw = {"dtype": variance.dtype, "device": variance.device}
    z = torch.tensor(s, **kw).mul(2.0).sqrt()
    weights = torch.tensor(w, **kw) / (2.0 * math.sqrt(math.pi))
    x = _safe_sqrt(variance)[..., None] * z
    return ((fn(x) + fn(-x)) * weights).sum(-1)
