"""Infinitely wide *and* deep networks for classification (Radhakrishnan, Belkin & Uhler, arXiv 2204.14126).

On the unit sphere with no biases, a network whose activation has the normalised dual
``φ̌(ξ) = E[φ(u)φ(v)] / E[φ(u)²]`` (unit variances, correlation ``ξ``; ``φ̌(1) = 1``) has the
NNGP kernel ``Σ`` and the NTK ``K``::

    Σ^0 = K^0 = x·x',     Σ^l = φ̌(Σ^{l-1}),     K^l = Σ^l + K^{l-1} φ̌'(Σ^{l-1})

As the depth grows, the kernel classifier ``argmax Kₓᵀ K⁻¹ Y`` becomes one of three classical
classifiers, decided by the dual alone (a dual is a power series with non-negative coefficients
``a_k`` summing to 1, so it is increasing and convex on ``[0, 1]``):

* ``φ̌(0) = 0, φ̌'(0) = 0`` — correlations collapse to 0 super-exponentially: **1-nearest neighbour**;
* ``φ̌(0) = 0, 0 < φ̌'(0) < 1 < φ̌'(1)`` — correlations collapse geometrically at rate ``φ̌'(0)``
  after escaping ``ξ = 1`` at rate ``φ̌'(1)``: the **singular kernel classifier**
  ``argmax Σ_i Y_i ‖x - x_i‖^{-α}``, which is the Bayes-consistent Devroye–Hilbert rule on
  ``S^{d-1}`` when ``α = d - 1``. With ``β = ln(1/φ̌'(0)) / ln φ̌'(1)``, the NNGP gives ``α = 2β``
  and the NTK ``α = 2β + 2`` (the NTK's first-layer term keeps growing at rate ``φ̌'(1)``
  until the correlation escapes 1, which adds one power of ``1/(1 - ξ)``);
* ``φ̌(0) > 0`` — correlations flow to the attracting fixed point ``ξ* > 0`` of ``φ̌``: the kernel
  forgets the inputs and the classifier becomes **majority vote** (ReLU, with ``ξ* = 1`` and
  ``φ̌'(1) = 1``, gets there only at depths of order 10⁴).

The paper's "optimal" duals (:data:`OPTIMAL_DUALS`) give ``2β = d - 1``; its official experiments
(uhlerlab/inf_depth_ntks ``main.py``) demonstrate them with the NNGP recursion. The exponents and
the NTK's ``+2`` are our derivation from the recursions, checked numerically in
``tests/priors/test_infinite_depth.py`` (each regime is matched at finite depth).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import brentq
from torch import Tensor, nn

from priors.dual_activations import DualActivation, as_dual

__all__ = [
    "OPTIMAL_DUALS",
    "HermiteActivation",
    "NTKClassifier",
    "NormalisedDual",
    "Regime",
    "deep_kernel",
    "limit_regime",
]

#: The paper's optimal duals (official code, uhlerlab/inf_depth_ntks ``models.py``): Hermite
#: coefficients ``{k: a_k}`` of ``φ̌(ξ) = Σ a_k ξ^k`` for data on ``S^{d-1} ⊂ R^d``, keyed by ``d``.
OPTIMAL_DUALS: dict[int, dict[int, float]] = {
    2: {1: 0.5, 7: 0.5},
    3: {1: 0.5, 3: 0.5},
    5: {1: 0.25, 2: 0.5, 3: 0.25},
    9: {1: 1 / 16, 2: 7 / 8, 3: 1 / 16},
}

#: Values of φ̌(0) or φ̌'(0) below this count as zero when classifying the regime.
ZERO_TOL = 1e-10


class NormalisedDual:
    """A normalised dual activation ``φ̌`` (``φ̌(1) = 1``) and its derivative, on correlations in ``[-1, 1]``.

    Build one with :meth:`polynomial` (Hermite coefficients), :meth:`from_activation` (any
    activation, via :mod:`priors.dual_activations`), or from two callables.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], derivative: Callable[[Tensor], Tensor], name: str) -> None:
        self.fn, self._derivative, self.name = fn, derivative, name

    def __call__(self, xi: Tensor) -> Tensor:
        return self.fn(xi)

    def derivative(self, xi: Tensor) -> Tensor:
        """``φ̌'(ξ)`` (equals ``E[φ'(u)φ'(v)] / E[φ(u)²]`` by Price's theorem)."""
        return self._derivative(xi)

    def at(self, xi: float, derivative: bool = False) -> float:
        """``φ̌(ξ)`` or ``φ̌'(ξ)`` at one point, in float64."""
        x = torch.tensor([xi], dtype=torch.float64)
        return float((self.derivative(x) if derivative else self(x))[0])

    @classmethod
    def polynomial(cls, coefficients: Mapping[int, float] | Sequence[float], name: str | None = None) -> NormalisedDual:
        """``φ̌(ξ) = Σ_k a_k ξ^k`` from non-negative Hermite coefficients (rescaled to sum to 1)."""
        coeffs = dict(enumerate(coefficients)) if not isinstance(coefficients, Mapping) else dict(coefficients)
        if not coeffs or any(int(k) != k or k < 0 for k in coeffs) or any(not a >= 0 for a in coeffs.values()):
            raise ValueError(f"coefficients must map degrees k >= 0 to a_k >= 0, got {coefficients!r}")
        total = sum(coeffs.values())
        if not total > 0:
            raise ValueError("coefficients must not all be zero")
        coeffs = {int(k): a / total for k, a in coeffs.items() if a > 0}

        def fn(xi: Tensor) -> Tensor:
            return sum(a * xi**k for k, a in coeffs.items())

        def deriv(xi: Tensor) -> Tensor:
            return sum(a * k * xi ** (k - 1) for k, a in coeffs.items() if k > 0) + torch.zeros_like(xi)

        label = name or " + ".join(f"{a:g}ξ^{k}" for k, a in sorted(coeffs.items()))
        dual = cls(fn, deriv, label)
        dual.coefficients = coeffs
        return dual

    @classmethod
    def hermite(cls, degree: int) -> NormalisedDual:
        """Dual of the normalised Hermite polynomial ``h_k``: ``φ̌(ξ) = ξ^k``."""
        return cls.polynomial({degree: 1.0}, name=f"hermite_{degree}")

    @classmethod
    def optimal(cls, dim: int) -> NormalisedDual:
        """The paper's optimal dual for data on ``S^{dim-1}`` (dim in :data:`OPTIMAL_DUALS`)."""
        if dim not in OPTIMAL_DUALS:
            raise ValueError(f"optimal duals are known for dim in {sorted(OPTIMAL_DUALS)}, got {dim!r}")
        return cls.polynomial(OPTIMAL_DUALS[dim], name=f"{dim}d_opt")

    @classmethod
    def from_activation(cls, activation: str | DualActivation | Callable, **kwargs) -> NormalisedDual:
        """Normalised dual of an activation: ``φ̌(ξ) = E[φ(u)φ(v)] / E[φ(u)²]`` with unit variances."""
        dual = as_dual(activation, **kwargs)

        def scale(xi: Tensor) -> Tensor:
            return dual.diag(torch.ones((), dtype=xi.dtype, device=xi.device))[0]

        def fn(xi: Tensor) -> Tensor:
            one = torch.ones_like(xi)
            return dual.cross(xi.clamp(-1.0, 1.0), one, one)[0] / scale(xi)

        def deriv(xi: Tensor) -> Tensor:
            one = torch.ones_like(xi)
            return dual.cross(xi.clamp(-1.0, 1.0), one, one, deriv=True)[1] / scale(xi)

        return cls(fn, deriv, dual.name)

    def __repr__(self) -> str:
        return f"NormalisedDual({self.name!r})"


def _as_normalised(activation: str | int | NormalisedDual | DualActivation | Callable) -> NormalisedDual:
    if isinstance(activation, NormalisedDual):
        return activation
    if isinstance(activation, HermiteActivation):
        return activation.dual
    if isinstance(activation, int) and not isinstance(activation, bool):
        return NormalisedDual.optimal(activation)
    if isinstance(activation, str):
        key = activation.lower()
        if key.endswith("d_opt") and key[:-5].isdigit():
            return NormalisedDual.optimal(int(key[:-5]))
        if key.startswith("hermite_") and key[8:].isdigit():
            return NormalisedDual.hermite(int(key[8:]))
    return NormalisedDual.from_activation(activation)


class HermiteActivation(nn.Module):
    """``φ(x) = Σ_k sqrt(a_k) h_k(x)`` with ``h_k = He_k / sqrt(k!)`` (orthonormal under N(0, 1)).

    Its normalised dual is ``Σ_k a_k ξ^k`` (Mehler's formula), so any non-negative coefficient
    list is realised by an activation. ``HermiteActivation.optimal(d)`` is the paper's
    Bayes-optimal activation for infinitely deep networks on data in ``S^{d-1}``.

    Args:
        coefficients: ``{k: a_k}`` or a sequence indexed by ``k``; rescaled to sum to 1.
    """

    def __init__(self, coefficients: Mapping[int, float] | Sequence[float]) -> None:
        super().__init__()
        self.dual = NormalisedDual.polynomial(coefficients)
        degrees = sorted(self.dual.coefficients)
        self.degrees = degrees
        weights = [math.sqrt(self.dual.coefficients[k] / math.factorial(k)) for k in degrees]
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float64), persistent=False)

    @classmethod
    def optimal(cls, dim: int) -> HermiteActivation:
        """The activation whose dual is :data:`OPTIMAL_DUALS` ``[dim]``."""
        if dim not in OPTIMAL_DUALS:
            raise ValueError(f"optimal activations are known for dim in {sorted(OPTIMAL_DUALS)}, got {dim!r}")
        return cls(OPTIMAL_DUALS[dim])

    def forward(self, x: Tensor) -> Tensor:
        # probabilists' Hermite recurrence He_{k+1} = x He_k - k He_{k-1}
        out = torch.zeros_like(x)
        prev, cur = torch.ones_like(x), x
        weights = dict(zip(self.degrees, self.weights.to(x.dtype).unbind()))
        for k in range(self.degrees[-1] + 1):
            he = prev if k == 0 else cur
            if k in weights:
                out = out + weights[k] * he
            if k >= 1:
                prev, cur = cur, x * cur - k * prev
        return out


def _unit_rows(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"{name} must be a [n, d] tensor of points, got {getattr(x, 'shape', type(x))}")
    norms = x.norm(dim=-1, keepdim=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has zero rows; points must lie on (or project to) the unit sphere")
    return x / norms


def _correlations(x1: Tensor, x2: Tensor) -> Tensor:
    """Cosines between the rows, as ``1 - ‖x̂1 - x̂2‖² / 2`` so that a point paired with itself gets exactly 1.

    ``ξ = 1`` is a repelling fixed point of every dual in the singular and 1-NN regimes: a
    self-correlation rounded to ``1 - 1e-16`` would be driven to 0 within ~50 layers.
    """
    u1, u2 = _unit_rows(x1, "x1"), _unit_rows(x2, "x2")
    dist = torch.cdist(u1, u2, compute_mode="donot_use_mm_for_euclid_dist")
    return (1.0 - dist.square() / 2.0).clamp(-1.0, 1.0)


def _check_kernel(kernel: str) -> str:
    if kernel not in ("ntk", "nngp"):
        raise ValueError(f"kernel must be 'ntk' or 'nngp', got {kernel!r}")
    return kernel


def deep_kernel(
    x1: Tensor,
    x2: Tensor,
    depth: int,
    dual: NormalisedDual | str | int,
    kernel: str = "ntk",
    normalise: bool = True,
) -> Tensor:
    """NTK (or NNGP kernel) of a bias-free network with ``depth`` hidden layers, inputs projected to the sphere.

    Args:
        x1: ``[n1, d]``; x2: ``[n2, d]``.
        depth: number of hidden layers (>= 1).
        dual: a :class:`NormalisedDual`, an activation name (``"relu"``, ``"erf"``, ...),
            ``"hermite_k"``, ``"<d>d_opt"``, or an integer ``d`` for :data:`OPTIMAL_DUALS` ``[d]``.
        kernel: ``"ntk"`` or ``"nngp"``.
        normalise: divide the NTK by ``K_L(x, x)`` (the same for every unit-norm ``x``) so deep
            kernels do not overflow; classifiers are unchanged. The NNGP needs no rescaling.

    Returns:
        ``[n1, n2]``.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    _check_kernel(kernel)
    dual = _as_normalised(dual)
    sigma = _correlations(x1, x2)
    if kernel == "nngp":
        for _ in range(depth):
            sigma = dual(sigma).clamp(-1.0, 1.0)
        return sigma
    ntk = sigma
    slope_at_one = dual.at(1.0, derivative=True)
    inv_diag = 1.0  # 1 / K_l(x, x), where K_l(x, x) = 1 + K_{l-1}(x, x) φ̌'(1) for every unit-norm x
    for _ in range(depth):
        step = dual.derivative(sigma)
        sigma = dual(sigma).clamp(-1.0, 1.0)
        if normalise:
            # K̃_l = K_l / K_l(x, x) = Σ_l / K_l(x, x) + K̃_{l-1} φ̌'(Σ_{l-1}) K_{l-1}(x, x) / K_l(x, x)
            new_inv = inv_diag / (inv_diag + slope_at_one)
            ntk = sigma * new_inv + ntk * step * (new_inv / inv_diag)
            inv_diag = new_inv
        else:
            ntk = sigma + ntk * step
    return ntk


@dataclass(frozen=True)
class Regime:
    """Which classifier an infinitely deep kernel becomes.

    Attributes:
        kind: ``"one_nn"``, ``"singular_kernel"``, ``"majority_vote"`` or ``"linear"`` (``φ̌(ξ) = ξ``:
            the kernel stays linear at every depth; no classical limit).
        exponent: ``α`` of the singular kernel ``‖x - x_i‖^{-α}`` (``None`` otherwise).
        fixed_point: the attracting fixed point of ``φ̌`` that correlations flow to.
    """

    kind: str
    exponent: float | None
    fixed_point: float


def limit_regime(dual: NormalisedDual | str | int, kernel: str = "ntk") -> Regime:
    """Classify a dual activation into the infinite-depth taxonomy (see the module docstring)."""
    _check_kernel(kernel)
    dual = _as_normalised(dual)
    at_zero, slope0, slope1 = dual.at(0.0), dual.at(0.0, derivative=True), dual.at(1.0, derivative=True)
    if at_zero > ZERO_TOL:
        fixed = 1.0  # φ̌'(1) <= 1 (e.g. ReLU): every correlation flows, slowly, to 1
        if slope1 > 1.0:
            # φ̌(ξ) - ξ is convex, positive at 0 and 0 at 1 with slope φ̌'(1) - 1 > 0: one root below 1
            gap = next((1.0 - 10.0**-p for p in range(2, 13) if dual.at(1.0 - 10.0**-p) < 1.0 - 10.0**-p), None)
            if gap is not None:
                fixed = brentq(lambda xi: dual.at(xi) - xi, 0.0, gap)
        return Regime("majority_vote", None, float(fixed))
    if slope0 <= ZERO_TOL:
        return Regime("one_nn", None, 0.0)
    if slope0 >= 1.0 - ZERO_TOL:
        return Regime("linear", None, 0.0)
    beta = math.log(1.0 / slope0) / math.log(slope1)
    return Regime("singular_kernel", 2.0 * beta + (2.0 if kernel == "ntk" else 0.0), 0.0)


def _one_hot(y: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(y, Tensor) or y.dim() != 1:
        raise ValueError(f"y must be a [n] tensor of class labels, got {getattr(y, 'shape', type(y))}")
    classes, index = torch.unique(y, return_inverse=True)
    if classes.numel() < 2:
        raise ValueError("y must contain at least two classes")
    return classes, torch.nn.functional.one_hot(index, classes.numel())


class NTKClassifier:
    """Kernel classifier with the NTK (or NNGP) of a deep, infinitely wide network (arXiv 2204.14126).

    ``fit`` stores the training set; ``decision_function`` is ``K(x, X) (K(X, X) + ridge I)⁻¹ Y``
    with one-hot ``Y``; ``predict`` takes the arg-max class. :attr:`regime` says which classical
    classifier the network becomes as ``depth → ∞`` and :meth:`predict_limit` applies it.

    Args:
        activation: as :func:`deep_kernel` (an integer ``d`` means :data:`OPTIMAL_DUALS` ``[d]``).
        depth: number of hidden layers.
        kernel: ``"ntk"`` (trained network) or ``"nngp"`` (Bayesian posterior mean).
        ridge: added to the training kernel's diagonal.

    Example:
        >>> clf = NTKClassifier(3, depth=100, kernel="nngp").fit(x_train, y_train)
        >>> clf.regime                       # Regime(kind='singular_kernel', exponent=2.0, ...)
        >>> (clf.predict(x) == clf.predict_limit(x)).float().mean()
    """

    def __init__(
        self, activation: NormalisedDual | str | int = 3, depth: int = 100, kernel: str = "ntk", ridge: float = 0.0
    ) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        self.dual = _as_normalised(activation)
        self.depth = depth
        self.kernel = _check_kernel(kernel)
        self.ridge = ridge
        self.regime = limit_regime(self.dual, kernel)

    def _gram(self, x1: Tensor, x2: Tensor) -> Tensor:
        return deep_kernel(x1, x2, self.depth, self.dual, self.kernel)

    def fit(self, x: Tensor, y: Tensor) -> NTKClassifier:
        """Store ``x`` ``[n, d]`` (projected to the sphere) and class labels ``y`` ``[n]``."""
        self.x_train = _unit_rows(x, "x")
        self.classes, onehot = _one_hot(y)
        self.y_onehot = onehot.to(x.device)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have {x.shape[0]} labels, got {y.shape[0]}")
        k = self._gram(self.x_train, self.x_train)
        eye = torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
        self.alpha = torch.linalg.solve(k + self.ridge * eye, self.y_onehot.to(k.dtype))
        return self

    def decision_function(self, x: Tensor) -> Tensor:
        """``[m, C]`` kernel-regression scores."""
        if not hasattr(self, "alpha"):
            raise RuntimeError("call fit(x, y) before predicting")
        return self._gram(x, self.x_train) @ self.alpha

    def predict(self, x: Tensor) -> Tensor:
        """``[m]`` predicted labels."""
        scores = self.decision_function(x)
        return self.classes[scores.argmax(-1).to(self.classes.device)]

    def predict_limit(self, x: Tensor) -> Tensor:
        """``[m]`` labels from the ``depth → ∞`` classifier of :attr:`regime`."""
        if not hasattr(self, "alpha"):
            raise RuntimeError("call fit(x, y) before predicting")
        x = _unit_rows(x, "x")
        y = self.y_onehot.to(x.dtype)
        kind = self.regime.kind
        if kind == "majority_vote":
            scores = y.sum(0).expand(x.shape[0], -1)
        elif kind == "one_nn":
            scores = y[_correlations(x, self.x_train).argmax(-1)]
        elif kind == "singular_kernel":
            dist2 = 2.0 - 2.0 * _correlations(x, self.x_train)
            # a test point on a training point takes that point's label (the weight is infinite)
            exact = dist2 <= torch.finfo(x.dtype).eps
            weights = dist2.clamp_min(torch.finfo(x.dtype).tiny).pow(-self.regime.exponent / 2.0)
            weights = torch.where(exact.any(-1, keepdim=True), exact.to(x.dtype), weights)
            scores = weights @ y
        else:
            raise ValueError(f"the {kind!r} regime has no classical limit classifier")
        return self.classes[scores.argmax(-1).to(self.classes.device)]
