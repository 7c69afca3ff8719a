"""Test problems for Bayesian optimisation, all in maximisation form (Li, Rudner & Wilson, arXiv 2305.20028).

The paper's synthetic problems come from ``botorch.test_functions`` (Branin, Hartmann-6, Ackley-10,
BraninCurrin, DTLZ); its two high-dimensional ones are made here: :class:`BNNDraw` (a function drawn
from a random tanh network, 400 inputs in the paper) and :class:`PolyDraw` (a sum of products of four
shifted inputs, 200 inputs in the paper). Every problem is a :class:`Problem`: bounds, dimension,
number of objectives, observation noise, the known optimum (or maximal hypervolume) where there is
one, and the paper's initial-design size and batch size.

``get_problem("hartmann6", noise_std=0.1)`` builds one by name; ``PROBLEMS`` lists the names.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from botorch.test_functions import DTLZ2, Ackley, Branin, BraninCurrin, Hartmann
from botorch.test_functions.base import BaseTestProblem, MultiObjectiveTestProblem
from botorch.test_functions.synthetic import SyntheticTestFunction
from botorch.utils.multi_objective.box_decompositions.dominated import DominatedPartitioning
from torch import Tensor

__all__ = ["PROBLEMS", "BNNDraw", "PaperSettings", "PolyDraw", "Problem", "get_problem"]


@dataclass(frozen=True)
class PaperSettings:
    """The settings of the paper's config for a problem (``config/*.json`` of yucenli/bnn-bo).

    Attributes:
        num_init: size of the Sobol initial design.
        batch_size: candidates per BO iteration (``q``).
        iterations: BO iterations.
    """

    num_init: int
    batch_size: int
    iterations: int


class Problem(torch.nn.Module):
    """A black-box objective to maximise over a box, with what is known about its optimum.

    Wraps a BoTorch test problem (built with ``negate=True`` where the original is a minimisation)
    and validates every query. Being a module, ``problem.to(device)`` moves its bounds and buffers.

    Args:
        name: the registry name.
        function: a BoTorch ``BaseTestProblem`` whose ``forward(X)`` is the maximisation form.
        paper: the paper's initial-design size, batch size and iteration count for this problem.
        optimal_value: the maximum of the noise-free objective, if known (single objective).
        max_hv: the hypervolume of the true Pareto front w.r.t. ``ref_point``, if known (several objectives).
    """

    def __init__(self, name: str, function: BaseTestProblem, *, paper: PaperSettings,
                 optimal_value: float | None = None, max_hv: float | None = None) -> None:
        super().__init__()
        self.name = name
        self.function = function
        self.paper = paper
        self.optimal_value = optimal_value
        self.max_hv = max_hv

    @property
    def dim(self) -> int:
        return int(self.function.dim)

    @property
    def num_objectives(self) -> int:
        return int(self.function.num_objectives)

    @property
    def is_multi_objective(self) -> bool:
        return self.num_objectives > 1

    @property
    def bounds(self) -> Tensor:
        """``[2, d]``: lower bounds in row 0, upper bounds in row 1."""
        return self.function.bounds

    @property
    def noise_std(self) -> float | list[float] | None:
        return self.function.noise_std

    @property
    def ref_point(self) -> Tensor | None:
        """``[m]`` hypervolume reference point (maximisation form), ``None`` for one objective."""
        return self.function.ref_point if self.is_multi_objective else None

    def check_X(self, X: Tensor, name: str = "X") -> None:
        """``X`` must be a finite ``[n, d]`` tensor inside ``bounds``.

        Raises:
            TypeError: not a floating-point tensor.
            ValueError: wrong shape, non-finite values, or points outside the bounds (naming the first one).
        """
        if not isinstance(X, Tensor) or not X.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor of shape [n, {self.dim}], got {type(X)}")
        if X.dim() != 2 or X.shape[-1] != self.dim:
            raise ValueError(f"{name} must have shape [n, {self.dim}] for problem {self.name!r}, "
                             f"got {tuple(X.shape)}")
        if not bool(torch.isfinite(X).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        lower, upper = self.bounds.to(X)
        outside = (X < lower) | (X > upper)
        if bool(outside.any()):
            i, j = (int(v) for v in outside.nonzero()[0])
            raise ValueError(f"{name}[{i}, {j}] = {float(X[i, j]):g} is outside the bounds "
                             f"[{float(lower[j]):g}, {float(upper[j]):g}] of problem {self.name!r}")

    def forward(self, X: Tensor, noise: bool = True) -> Tensor:
        """Evaluate the objective(s).

        Args:
            X: ``[n, d]`` points inside ``bounds``.
            noise: add the observation noise (``noise_std``).

        Returns:
            ``[n, m]`` objective values (maximisation form).
        """
        self.check_X(X)
        Y = self.function(X, noise=noise)
        return Y.unsqueeze(-1) if Y.dim() == 1 else Y

    def evaluate_true(self, X: Tensor) -> Tensor:
        """``[n, m]`` noise-free objective values at ``[n, d]`` points ``X``."""
        return self(X, noise=False)

    def score(self, F: Tensor) -> float:
        """How good a set of evaluated points is: the best value (one objective) or the dominated
        hypervolume (several), from ``[n, m]`` values; rows with a NaN are ignored.

        Returns:
            The best value or hypervolume; ``nan`` (one objective) or ``0`` (several) when no row is finite.
        """
        ok = torch.isfinite(F).all(-1)
        if not self.is_multi_objective:
            return float(F[ok, 0].max()) if bool(ok.any()) else math.nan
        if not bool(ok.any()):
            return 0.0
        ref = self.ref_point.to(F)
        return float(DominatedPartitioning(ref_point=ref, Y=F[ok]).compute_hypervolume())

    def regret(self, score: float) -> float | None:
        """Simple regret ``optimum - best`` (one objective) or ``max_hv - hv`` (several); ``None`` if unknown."""
        best = self.max_hv if self.is_multi_objective else self.optimal_value
        return None if best is None else best - score

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, num_objectives={self.num_objectives}, noise_std={self.noise_std}"


class BNNDraw(SyntheticTestFunction):
    """A function drawn from a random tanh network: every weight and bias ``~ N(0, 1)``.

    The paper's ``bnn_400`` problem (``BnnDraw`` in yucenli/bnn-bo): ``d`` inputs in ``[0, 1]``,
    hidden widths ``(256, 256)``, one output, maximised. The weights come from a seeded generator,
    so the same ``seed`` gives the same function on every machine. Its optimum is unknown.

    Args:
        dim: number of inputs.
        seed: seed of the weight draw.
        hidden: hidden-layer widths.
    """

    _is_minimization_by_default = False

    def __init__(self, dim: int = 400, *, seed: int = 0, hidden: tuple[int, ...] = (256, 256),
                 noise_std: float | None = None, negate: bool = False, dtype: torch.dtype = torch.float64) -> None:
        if dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        self.dim = dim
        self.continuous_inds = list(range(dim))
        self._bounds = [(0.0, 1.0)] * dim
        super().__init__(noise_std=noise_std, negate=negate, dtype=dtype)
        gen = torch.Generator().manual_seed(seed)
        widths = [dim, *hidden, 1]
        for k, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            self.register_buffer(f"weight{k}", torch.randn(n_in, n_out, generator=gen, dtype=dtype))
            self.register_buffer(f"bias{k}", torch.randn(n_out, generator=gen, dtype=dtype))
        self.num_layers = len(widths) - 1

    def _evaluate_true(self, X: Tensor) -> Tensor:
        h = X
        for k in range(self.num_layers):
            h = h @ getattr(self, f"weight{k}").to(X) + getattr(self, f"bias{k}").to(X)
            if k < self.num_layers - 1:
                h = torch.tanh(h)
        return h.squeeze(-1)


class PolyDraw(SyntheticTestFunction):
    """``f(x) = Σ_j Π_{k<4} (x_{j + k d/4} − c_{j + k d/4})`` on ``[0, 1]^d``, ``c ~ N(0, I)``, maximised.

    The paper's ``poly_200`` problem (``PolyDraw`` in yucenli/bnn-bo): ``d/4`` independent groups of
    four inputs, each contributing the product of its shifted inputs. Each product is multilinear, so
    its maximum over the box is at one of the 16 corners of its group's cube: the optimum is known
    exactly (``optimal_value``, ``optimizers``).

    Args:
        dim: number of inputs, a multiple of 4.
        seed: seed of the shift ``c``.
    """

    GROUP = 4  # inputs per product term (the paper's definition)
    _is_minimization_by_default = False

    def __init__(self, dim: int = 200, *, seed: int = 0, noise_std: float | None = None, negate: bool = False,
                 dtype: torch.dtype = torch.float64) -> None:
        if dim < self.GROUP or dim % self.GROUP:
            raise ValueError(f"dim must be a positive multiple of {self.GROUP}, got {dim}")
        self.dim = dim
        self.continuous_inds = list(range(dim))
        self._bounds = [(0.0, 1.0)] * dim
        c = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        # Column j of the [4, d/4] view holds group j's inputs (the paper's reshape).
        groups = c.reshape(self.GROUP, dim // self.GROUP)
        corners = torch.tensor(list(itertools.product((0.0, 1.0), repeat=self.GROUP)), dtype=dtype)  # [16, 4]
        values = (corners.unsqueeze(-1) - groups).prod(-2)  # [16, d/4]
        best, idx = values.max(0)
        self._optimal_value = float(best.sum())
        self._optimizers = [tuple(corners[idx].T.reshape(-1).tolist())]
        super().__init__(noise_std=noise_std, negate=negate, dtype=dtype)
        self.register_buffer("c", c)

    def _evaluate_true(self, X: Tensor) -> Tensor:
        shifted = (X - self.c.to(X)).reshape(*X.shape[:-1], self.GROUP, self.dim // self.GROUP)
        return shifted.prod(-2).sum(-1)


def _single(name: str, function: SyntheticTestFunction, paper: PaperSettings) -> Problem:
    return Problem(name, function, paper=paper, optimal_value=float(function.optimal_value) + 0.0)  # + 0.0: no -0.0


def _multi(name: str, function: MultiObjectiveTestProblem, paper: PaperSettings) -> Problem:
    try:
        max_hv = float(function.max_hv)
    except (NotImplementedError, AttributeError):
        max_hv = None
    return Problem(name, function, paper=paper, max_hv=max_hv)


# The paper's configs (config/*.json of yucenli/bnn-bo): Sobol initial design, q, BO iterations.
PAPER_SYNTHETIC = PaperSettings(num_init=10, batch_size=10, iterations=19)
PAPER_BRANIN = PaperSettings(num_init=10, batch_size=10, iterations=9)
PAPER_BRANINCURRIN = PaperSettings(num_init=10, batch_size=5, iterations=19)
PAPER_DTLZ = PaperSettings(num_init=10, batch_size=10, iterations=9)
PAPER_BNN = PaperSettings(num_init=100, batch_size=10, iterations=50)
PAPER_POLY = PaperSettings(num_init=100, batch_size=10, iterations=25)


def branin(noise_std: float | None = None) -> Problem:
    """Branin (2-D), negated: maximum ``-0.397887``."""
    return _single("branin", Branin(noise_std=noise_std, negate=True), PAPER_BRANIN)


def hartmann6(noise_std: float | None = None) -> Problem:
    """Hartmann-6 on ``[0, 1]^6``, negated: maximum ``3.32237``."""
    return _single("hartmann6", Hartmann(dim=6, noise_std=noise_std, negate=True), PAPER_SYNTHETIC)


def ackley10(noise_std: float | None = None) -> Problem:
    """Ackley on ``[-32.768, 32.768]^10``, negated: maximum ``0`` at the origin."""
    return _single("ackley10", Ackley(dim=10, noise_std=noise_std, negate=True), PAPER_SYNTHETIC)


def branincurrin(noise_std: float | None = None) -> Problem:
    """Branin-Currin (2-D, 2 objectives), negated; BoTorch's reference point and maximal hypervolume."""
    return _multi("branincurrin", BraninCurrin(noise_std=noise_std, negate=True), PAPER_BRANINCURRIN)


def dtlz2(dim: int = 6, num_objectives: int = 2, noise_std: float | None = None) -> Problem:
    """DTLZ2 on ``[0, 1]^dim`` with ``num_objectives`` objectives (``dim > num_objectives``), negated."""
    if not 1 < num_objectives < dim:
        raise ValueError(f"dtlz2 needs 1 < num_objectives < dim, got num_objectives={num_objectives}, dim={dim}")
    return _multi("dtlz2", DTLZ2(dim=dim, num_objectives=num_objectives, noise_std=noise_std, negate=True),
                  PAPER_DTLZ)


def bnn_draw(dim: int = 400, seed: int = 0, noise_std: float | None = None) -> Problem:
    """:class:`BNNDraw` (the paper's ``bnn_400``); optimum unknown, so records carry best values, not regret."""
    return Problem("bnndraw", BNNDraw(dim, seed=seed, noise_std=noise_std), paper=PAPER_BNN)


def poly(dim: int = 200, seed: int = 0, noise_std: float | None = None) -> Problem:
    """:class:`PolyDraw` (the paper's ``poly_200``), with its exact optimum."""
    return _single("poly", PolyDraw(dim, seed=seed, noise_std=noise_std), PAPER_POLY)


#: Problem names -> builders; every builder takes ``noise_std`` and its own options (dims, seeds).
PROBLEMS: dict[str, Callable[..., Problem]] = {
    "branin": branin,
    "hartmann6": hartmann6,
    "ackley10": ackley10,
    "branincurrin": branincurrin,
    "dtlz2": dtlz2,
    "bnndraw": bnn_draw,
    "poly": poly,
}


def get_problem(name: str, **kwargs: Any) -> Problem:
    """Build the problem called ``name`` (one of ``PROBLEMS``), passing ``kwargs`` to its builder.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or bad options.
    """
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; valid names: {', '.join(PROBLEMS)}")
    return PROBLEMS[name](**kwargs)
