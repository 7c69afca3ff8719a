"""Functional priors: fit a BNN's weight prior so that its prior over functions matches a GP.

Tran, Rossi, Milios & Filippone, "All You Need is a Good Functional Prior for Bayesian Deep
Learning" (JMLR 2022, arXiv:2011.12829): choose the hyperparameters ``psi`` of a weight prior
by minimising a Wasserstein distance between the BNN's distribution over functions and a
target process (a GP), both evaluated at a random *measurement set* ``X_M``; then sample the
posterior under the fitted prior with SGHMC. Each outer step here

1. draws a measurement set ``X_M`` ``[M, d]`` (part training inputs, part uniform over the
   input box: :class:`MeasurementSet`),
2. draws ``n`` functions from the BNN prior at ``X_M`` -- reparameterised, so they are
   differentiable in ``psi`` -- and ``n`` from the target (or its exact moments),
3. takes one RMSprop step on ``psi`` for the estimated distance (:mod:`priors.wasserstein`).

The outer loop is :class:`PriorMatcher`, a :class:`~inference.training.trainer.Trainer` on the
shared loop (:func:`inference.training.loop.optimize`: checkpoints, progress, steps skipped for
non-finite values); :func:`match_prior` is its one-call form. Both return a :class:`MatchResult`.

Priors fitted this way: :class:`~priors.weights.LayerwiseGaussian` (GPi-G: one scale per
tensor), :class:`~priors.weights.HierarchicalGaussian` (GPi-H: the Gamma shape and rate of
each tensor's precision), or any :class:`~priors.weights.WeightPrior` with parameters.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from gpytorch.kernels import Kernel
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.func import functional_call

from inference.checks import check_choice, check_int
from inference.data import check_data
from inference.seeding import base_seed, seeded
from inference.training.fit import Fit
from inference.training.trainer import Trainer
from priors.processes import psd_cholesky
from priors.wasserstein import (
    CRITIC_HIDDEN,
    GRADIENT_PENALTY,
    LipschitzCritic,
    critic_wasserstein,
    moment_matched_w2,
    sliced_wasserstein,
    sqrtm_psd,
)
from priors.weights import WeightPrior, forward_draws

__all__ = [
    "ESTIMATORS",
    "GPTarget",
    "MatchResult",
    "MeasurementSet",
    "PriorMatcher",
    "PriorNetwork",
    "match_prior",
    "plot_prior_functions",
]

#: The distance estimators :func:`match_prior` offers.
ESTIMATORS = ("gaussian", "sliced", "critic")

#: Fraction of the measurement set taken from the training inputs in the paper's UCI
#: notebook (``real_ratio=0.7``; its code's default is 0.8).
REAL_FRACTION = 0.7

#: Jitter added to the GP covariance before its Cholesky factor, relative to the mean
#: prior variance (the paper's code adds an absolute 1e-6 and doubles it on failure).
JITTER = 1e-6

#: Most negative eigenvalue, relative to the largest, that still counts as round-off of a
#: PSD kernel matrix; below it the kernel is reported as not positive semi-definite.
PSD_RTOL = 1e-6

#: Largest fraction of matching steps that may be skipped for non-finite values before
#: :class:`PriorMatcher` gives up.
MAX_SKIPPED = 0.1

#: Hyperparameter draws :meth:`GPTarget.moments` averages over by default (hierarchical GPs).
MOMENT_DRAWS = 512


# ============================================================= measurement sets
class MeasurementSet:
    """Random measurement sets as in the paper: part training inputs, part uniform in a box.

    Each call returns ``size`` points: ``round(real_fraction * size)`` training inputs drawn
    without replacement, the rest uniform over the hyper-rectangle ``bounds`` (default: the
    training inputs' range; the paper uses the range of training *and* test inputs, which
    you get by passing ``bounds=torch.stack([x_all.amin(0), x_all.amax(0)])``).

    Args:
        train_x: training inputs ``[N, d]``.
        size: points per measurement set ``M`` (paper: 100 for UCI).
        real_fraction: share of training inputs, in ``[0, 1]``.
        bounds: ``[2, d]`` lower and upper corners of the box.
    """

    def __init__(self, train_x: Tensor, size: int = 100, real_fraction: float = REAL_FRACTION,
                 bounds: Tensor | None = None) -> None:
        if not isinstance(train_x, Tensor) or train_x.dim() != 2 or train_x.shape[0] < 1:
            got = tuple(train_x.shape) if isinstance(train_x, Tensor) else type(train_x).__name__
            raise ValueError(f"train_x must be a tensor of inputs [N, d], got {got}")
        if not train_x.is_floating_point() or not bool(torch.isfinite(train_x).all()):
            raise ValueError("train_x must hold finite floating-point values")
        if int(size) < 2:
            raise ValueError(f"size must be >= 2 measurement points, got {size}")
        if not 0.0 <= float(real_fraction) <= 1.0:
            raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
        d = train_x.shape[1]
        if bounds is None:
            bounds = torch.stack([train_x.amin(0), train_x.amax(0)])
        if not isinstance(bounds, Tensor) or bounds.shape != (2, d):
            got = tuple(bounds.shape) if isinstance(bounds, Tensor) else type(bounds).__name__
            raise ValueError(f"bounds must be [2, {d}] (lower and upper corners) for train_x [N, {d}], got {got}")
        if bool((bounds[0] > bounds[1]).any()):
            raise ValueError("bounds[0] (lower corner) must not exceed bounds[1] (upper corner)")
        self.train_x = train_x
        self.size = int(size)
        self.real_fraction = float(real_fraction)
        self.bounds = bounds.to(train_x)

    def __call__(self) -> Tensor:
        """A fresh measurement set ``[size, d]`` (torch's global generator)."""
        n_real = round(self.real_fraction * self.size)
        n = self.train_x.shape[0]
        x = self.train_x
        if n_real <= n:
            idx = torch.randperm(n, device=x.device)[:n_real]
        else:  # fewer training points than requested: draw with replacement
            idx = torch.randint(n, (n_real,), device=x.device)
        u = torch.rand(self.size - n_real, x.shape[1], dtype=x.dtype, device=x.device)
        box = self.bounds[0] + u * (self.bounds[1] - self.bounds[0])
        return torch.cat([x[idx], box], 0)


# ====================================================================== targets
def _kernel_dims(kernel: Kernel) -> set[int]:
    """The input dimensions the kernel's ARD parameters fix (empty when none do)."""
    return {int(m.ard_num_dims) for m in kernel.modules()
            if isinstance(m, Kernel) and getattr(m, "ard_num_dims", None) is not None}


def _psd_cholesky(cov: Tensor, jitter: float) -> Tensor:
    """Cholesky factors of kernel matrices ``[..., M, M]``, with jitter; ``ValueError`` if not PSD."""
    if not bool(torch.isfinite(cov).all()):
        raise ValueError("the target kernel gave non-finite values on the measurement set")
    scale = cov.diagonal(dim1=-2, dim2=-1).abs().mean(-1).clamp(min=torch.finfo(cov.dtype).tiny)
    asym = (cov - cov.transpose(-1, -2)).abs().amax((-1, -2))
    if bool((asym > PSD_RTOL * scale).any()):
        raise ValueError("the target kernel is not symmetric on the measurement set: k(x, x') != k(x', x); "
                         "a covariance function must be symmetric positive semi-definite")
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    try:  # the shared jitter-escalating factorisation (priors.processes), from the base jitter up
        return psd_cholesky(cov + (jitter * scale)[..., None, None] * eye, what="target kernel matrix")[0]
    except ValueError:
        evals = torch.linalg.eigvalsh(cov)
        low, high = evals[..., 0], evals[..., -1].abs()
        if bool((low < -PSD_RTOL * high).any()):
            worst = int((low / high.clamp(min=torch.finfo(cov.dtype).tiny)).argmin())
            raise ValueError(
                f"the target kernel is not positive semi-definite on the measurement set: smallest eigenvalue "
                f"{float(low.flatten()[worst]):.3g} vs largest {float(high.flatten()[worst]):.3g}; use a valid "
                "covariance function (sums and products of PSD kernels with positive scales are PSD)"
            ) from None
        raise


def _prior_draws(prior: Any, shape: torch.Size, num: int) -> Tensor:
    """``num`` draws ``[num, *shape]`` of a hyperparameter of shape ``shape`` from its GPyTorch prior,
    whose own shape may be scalar (one draw per entry), ``shape``'s size, or a suffix of it."""
    own = prior.batch_shape + prior.event_shape
    if own.numel() == shape.numel() and len(own) > 0:
        return prior.sample(torch.Size([num])).reshape(num, *shape)
    if len(own) == 0:
        return prior.sample(torch.Size([num]) + shape)
    lead = shape[: len(shape) - len(own)]
    return torch.broadcast_to(prior.sample(torch.Size([num]) + lead), (num, *shape))


class GPTarget:
    """A zero-mean GP prior over functions, given by a GPyTorch kernel.

    When the kernel carries hyperpriors (e.g. ``RBFKernel(lengthscale_prior=LogNormalPrior(...))``,
    ``ScaleKernel(..., outputscale_prior=...)``) and ``hierarchical`` is not False, every
    function draw first draws its own hyperparameters from them, as in the paper's UCI
    experiments (lengthscales ``LogNormal(log sqrt(2d), 1)``, variance ``LogNormal(0.1, 1)``).
    The hyperparameter draws are vectorised through GPyTorch's batch mode
    (``pyro_load_from_samples``). The kernel passed in is copied, never modified.

    Args:
        kernel: a GPyTorch kernel.
        hierarchical: redraw the kernel's hyperparameters per function (default: whenever the
            kernel has priors).
        jitter: added to the covariance's diagonal (relative to its mean) before factorising.
    """

    def __init__(self, kernel: Kernel, hierarchical: bool | None = None, jitter: float = JITTER) -> None:
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a gpytorch.kernels.Kernel, got {type(kernel).__name__}")
        self.kernel = copy.deepcopy(kernel)
        self.kernel.requires_grad_(False)
        has_priors = any(True for _ in self.kernel.named_priors())
        if hierarchical and not has_priors:
            raise ValueError("hierarchical=True needs hyperpriors on the kernel (e.g. lengthscale_prior=...)")
        self.hierarchical = has_priors if hierarchical is None else bool(hierarchical)
        self.jitter = float(jitter)

    def check_inputs(self, x: Tensor) -> None:
        """``ValueError`` when ``x`` ``[M, d]`` does not fit the kernel's ARD dimension."""
        dims = _kernel_dims(self.kernel)
        if x.dim() != 2 or (dims and dims != {x.shape[-1]}):
            raise ValueError(f"measurement_set points of shape {tuple(x.shape)} do not fit the target kernel: "
                             f"it expects inputs [M, {sorted(dims)[0] if dims else 'd'}]")

    def covariance(self, x: Tensor, num: int = 1) -> Tensor:
        """Kernel matrices ``[num, M, M]`` in float64 (one per hyperparameter draw when hierarchical)."""
        self.check_inputs(x)
        # In float64 whatever x's dtype, as the paper's code does: float32 round-off in the
        # kernel's distances would break the Cholesky factor of smooth (near low-rank) kernels.
        x = x.to(torch.float64)
        kernel = self.kernel.to(x)
        with torch.no_grad():
            if self.hierarchical:
                kernel = copy.deepcopy(kernel)
                draws = {name: _prior_draws(prior, closure(module).shape, num).to(x)
                         for name, module, prior, closure, _ in kernel.named_priors()}
                kernel.pyro_load_from_samples(draws)
            try:
                cov = kernel(x).to_dense()
            except RuntimeError as err:
                raise ValueError(f"the target kernel failed on measurement_set points of shape "
                                 f"{tuple(x.shape)}: {err}") from err
        return cov.expand(num, -1, -1) if not self.hierarchical else cov

    def sample(self, x: Tensor, num: int) -> Tensor:
        """``num`` function draws at ``x`` ``[M, d]``: ``[num, M]``."""
        cov = self.covariance(x, num)
        chol = _psd_cholesky(cov[:1] if not self.hierarchical else cov, self.jitter)
        z = torch.randn(num, x.shape[0], 1, dtype=chol.dtype, device=chol.device)
        return (chol @ z).squeeze(-1).to(x.dtype)

    def moments(self, x: Tensor, num: int = MOMENT_DRAWS) -> tuple[Tensor, Tensor]:
        """Mean ``[M]`` (zero) and covariance ``[M, M]`` at ``x``: exact, or ``E[K]`` over ``num``
        hyperparameter draws when hierarchical."""
        cov = self.covariance(x, num if self.hierarchical else 1).mean(0)
        _psd_cholesky(cov, self.jitter)  # the check only: the moments need no factor
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device), cov.to(x.dtype)


class _CallableTarget:
    """Any ``target(x, num) -> [num, M]`` or ``[num, M, P]`` function sampler."""

    def __init__(self, fn: Callable[[Tensor, int], Tensor]) -> None:
        self.fn = fn

    def sample(self, x: Tensor, num: int) -> Tensor:
        with torch.no_grad():
            f = self.fn(x, num)
        if not isinstance(f, Tensor) or f.dim() not in (2, 3) or f.shape[:2] != (num, x.shape[0]):
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"target(x, num) must return function draws [num, M] or [num, M, P] = "
                             f"[{num}, {x.shape[0]}, ...] for x of shape {tuple(x.shape)}, got {got}")
        return f.to(x)


def _as_target(target: Any) -> GPTarget | _CallableTarget:
    if isinstance(target, GPTarget):
        return target
    if isinstance(target, Kernel):
        return GPTarget(target)
    if callable(target):
        return _CallableTarget(target)
    raise TypeError(f"target must be a gpytorch Kernel, a GPTarget or a callable (x, num) -> draws, got "
                    f"{type(target).__name__}")


def _outputs(f: Tensor) -> Tensor:
    """Function draws as ``[P, n, M]`` (outputs first)."""
    return f.unsqueeze(0) if f.dim() == 2 else f.permute(2, 0, 1)


# ===================================================================== the BNN
@dataclass
class PriorNetwork:
    """A network and the weight prior over its parameters: the BNN prior over functions.

    Attributes:
        net: the network (its own parameter values are not used).
        prior: a :class:`~priors.weights.WeightPrior` bound to ``net``'s parameters.
    """

    net: nn.Module
    prior: WeightPrior

    def functions(self, x: Tensor, num: int) -> Tensor:
        """``num`` draws of the BNN prior over functions at ``x``: ``[num, M, P]`` (differentiable in
        the prior's parameters, by reparameterisation)."""
        return forward_draws(self.net, self.prior.sample(x, (num,)), x)


def _prior_network(net_or_model: Any, weight_prior: WeightPrior | None) -> PriorNetwork:
    """The network and prior to match.

    ``net_or_model`` is a model holding ``net`` and ``prior`` (a
    :class:`~bayesnets.bnn.BayesianNet` or a :class:`PriorNetwork`; priors never import models, so
    it is recognised by those attributes) or a bare ``nn.Module`` with ``weight_prior`` bound to it here.
    """
    prior = getattr(net_or_model, "prior", None)
    if isinstance(prior, WeightPrior) and isinstance(getattr(net_or_model, "net", None), nn.Module):
        if weight_prior is not None and weight_prior is not prior:
            raise ValueError("weight_prior must be None or the model's own prior when a BayesianNet is given")
        return PriorNetwork(net_or_model.net, prior)
    if isinstance(net_or_model, nn.Module):
        if not isinstance(weight_prior, WeightPrior):
            raise TypeError(f"weight_prior must be a priors.weights.WeightPrior for a bare nn.Module, got "
                            f"{type(weight_prior).__name__}")
        weight_prior.bind({n: p.shape for n, p in net_or_model.named_parameters()})
        return PriorNetwork(net_or_model, weight_prior)
    raise TypeError(f"net_or_model must be a BayesianNet or an nn.Module, got {type(net_or_model).__name__}")


def _as_prior_network(net_or_model: nn.Module, weight_prior: WeightPrior | None, x: Tensor) -> PriorNetwork:
    """:func:`_prior_network`, checked on the points ``x`` ``[M, ...]``."""
    pair = _prior_network(net_or_model, weight_prior)
    _check_points(pair, x)
    return pair


def _draw_points(measurement_set: Any) -> Tensor:
    """One measurement set ``[M, ...]`` from a tensor or a callable."""
    if isinstance(measurement_set, Tensor):
        x = measurement_set
    elif callable(measurement_set):
        x = measurement_set()
    else:
        raise TypeError(f"measurement_set must be a MeasurementSet, a tensor [M, d] or a callable () -> [M, d], "
                        f"got {type(measurement_set).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < 2 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"measurement_set must give at least 2 floating-point points [M, d], got {got}")
    return x


def _check_points(pair: PriorNetwork, x: Tensor) -> None:
    """The measurement points are finite, on the network's device, and map to ``[M, P]`` outputs."""
    try:
        check_data(x)
    except ValueError as err:
        raise ValueError(f"measurement_set points of shape {tuple(x.shape)} are not usable: {err}") from err
    weights = {n: p.detach().to(x) for n, p in pair.net.named_parameters()}
    buffers = [t for t in pair.net.buffers() if t.device != x.device]
    if buffers:
        raise ValueError(f"the network's buffers are on {buffers[0].device} but the measurement points on {x.device}; "
                         "move the network with .to(x.device)")
    try:
        with torch.no_grad():
            out = functional_call(pair.net, weights, (x[:2],))
    except (RuntimeError, TypeError, IndexError, ValueError) as err:
        raise ValueError(f"measurement_set points of shape {tuple(x.shape)} do not fit the network: {err}") from err
    if not isinstance(out, Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the network must map [M, ...] inputs to [M, P] outputs, got {got}")


# ======================================================================= match
@dataclass
class MatchResult(Fit):
    """What :class:`PriorMatcher` (and :func:`match_prior`) did: a :class:`~inference.training.fit.Fit`.

    Attributes:
        module: the fitted weight prior (matched in place).
        history: ``"distance"``, the estimated distance at every outer step ``[num_steps]`` (for
            ``"critic"`` the W1 estimate, for ``"gaussian"`` the moment-matched W2, for
            ``"sliced"`` the sliced W2; summed over network outputs), NaN at steps skipped for
            non-finite values; ``"loss"``, the same values (the quantity minimised).
        attrs: the matcher's record: settings (``estimator`` among them), ``seed``, ``seconds``,
            ``skipped_steps``, ...
        initial_state: the prior's ``state_dict`` before matching (to plot or restore it).
    """

    initial_state: dict[str, Tensor] = field(default_factory=dict, repr=False)

    extras: ClassVar[tuple[str, ...]] = ("initial_state",)

    @property
    def distance(self) -> Tensor:
        """The estimated distance per step, ``[num_steps]`` (``history["distance"]``)."""
        return self.history["distance"]

    @property
    def estimator(self) -> str:
        """Which distance estimator matched the prior."""
        return str(self.attrs["estimator"])

    @property
    def seconds(self) -> float:
        """Wall time of the matching."""
        return float(self.attrs["seconds"])


class PriorMatcher(Trainer):
    """Fit a weight prior's hyperparameters so the BNN's function prior matches a target process.

    Tran, Rossi, Milios & Filippone 2022 (arXiv:2011.12829, P38), Algorithm 1: per step a new
    measurement set, ``n`` reparameterised BNN function draws and ``n`` target draws, an
    estimate of the Wasserstein distance and one RMSprop step on the prior's parameters
    (updated in place). A step whose distance or gradient is not finite (e.g. a float32 Gamma
    precision underflowing to 0 under a small shape) is skipped and recorded as NaN rather than
    written into the prior; beyond :data:`MAX_SKIPPED` of the steps the run stops with a
    ``FloatingPointError`` naming the fix.

    Seeding: ``seed`` draws the first measurement set (under ``seeded(seed)``) and runs the
    matching under ``seeded(seed + 1)``.

    Args:
        num_steps: outer steps (paper: 200 for UCI).
        estimator: ``"gaussian"`` (closed-form W2 between moment-matched Gaussians, no inner
            loop; the target's moments are exact for a GP, the mean kernel matrix over
            ``num_functions`` hyperparameter draws for a hierarchical GP, the sample moments of
            ``num_functions`` draws for a callable), ``"sliced"`` (sliced W2,
            ``num_projections`` directions) or ``"critic"`` (the paper's W1 with a Lipschitz
            critic and gradient penalty; ``critic_*`` settings, paper UCI defaults: up to 200
            Adagrad steps at lr 0.02, penalty 10, early stop at critic-gradient norm 0.1, 200
            hidden units).
        num_functions: function draws per side and step (paper: 128).
        optimizer, lr: the outer optimiser, RMSprop at 0.05 on the prior's (log-scale)
            parameters (the paper's UCI setting).
        Other arguments as for :class:`~inference.training.trainer.Trainer` (schedule, clipping,
        seed, checkpoints, callback).

    Example:
        >>> fit = PriorMatcher(num_steps=200, seed=0).fit(model, (kernel, MeasurementSet(x_train)))
        >>> fit.history["distance"]    # [200], falling as the prior fits
    """

    def __init__(self, num_steps: int = 200, *, estimator: str = "gaussian", num_functions: int = 128,
                 num_projections: int = 256, critic_steps: int = 200, critic_lr: float = 0.02,
                 critic_penalty: float = GRADIENT_PENALTY, critic_threshold: float | None = 0.1,
                 critic_hidden: int = CRITIC_HIDDEN, optimizer: str | Callable[..., Any] = "rmsprop",
                 lr: float = 0.05, **loop: Any) -> None:
        self.estimator = check_choice(estimator, "estimator", ESTIMATORS)
        super().__init__(num_steps, optimizer=optimizer, lr=lr, **loop)
        self.num_functions = check_int(num_functions, "num_functions", 2)
        self.num_projections = int(num_projections)
        self.critic_steps = int(critic_steps)
        self.critic_lr = critic_lr
        self.critic_penalty = critic_penalty
        self.critic_threshold = critic_threshold
        self.critic_hidden = int(critic_hidden)

    def fit(self, model: Any, data: tuple[Any, Any], progress: bool = True) -> MatchResult:
        """Match ``model``'s weight prior to ``data = (target, measurement_set)``.

        Args:
            model: a :class:`~bayesnets.bnn.BayesianNet` or a :class:`PriorNetwork` (anything
                with a network ``net`` and a :class:`~priors.weights.WeightPrior` ``prior`` bound
                to it). All of the prior's ``nn.Parameter``s are optimised; their
                ``requires_grad`` flags are restored after.
            data: ``target``, a GPyTorch kernel (hierarchical when it carries hyperpriors, see
                :class:`GPTarget`), a :class:`GPTarget`, or a callable ``(x [M, d], num) ->
                [num, M]`` (``[num, M, P]`` for ``P`` network outputs) drawing functions of any
                process; and ``measurement_set``, a :class:`MeasurementSet` (or any callable
                giving ``[M, d]`` points per step) or a fixed tensor ``[M, d]`` (e.g. a 1-D grid).
            progress: show a tqdm bar.

        Returns:
            A :class:`MatchResult` with the distance per step.

        Raises:
            ValueError: measurement points that do not fit the network or the kernel, a kernel
                that is not positive semi-definite on them, target draws of the wrong shape.
            TypeError: a target, prior or measurement set of the wrong kind.
            FloatingPointError: more than :data:`MAX_SKIPPED` of the steps were not finite.
        """
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise TypeError(f"data must be (target, measurement_set), got {type(data).__name__}")
        target, measurement_set = data
        tgt = _as_target(target)
        pair = _prior_network(model, None)
        seed = base_seed(self.seed)
        with seeded(seed):
            x0 = _draw_points(measurement_set)
        _check_points(pair, x0)
        if isinstance(tgt, GPTarget):
            tgt.check_inputs(x0)
        prior = pair.prior
        params = list(prior.parameters())
        if not params:
            raise ValueError(f"{type(prior).__name__} has no parameters to fit")
        settings = {"num_projections": self.num_projections, "critic_steps": self.critic_steps,
                    "critic_lr": self.critic_lr, "critic_penalty": self.critic_penalty,
                    "critic_threshold": self.critic_threshold}
        critic = None
        if self.estimator == "critic":
            # Its first weights never count (critic_wasserstein re-initialises it every step);
            # drawn under the seed they leave the caller's random stream alone.
            with seeded(seed):
                critic = LipschitzCritic(x0.shape[0], self.critic_hidden).to(x0)
        initial_state = {k: v.detach().clone() for k, v in prior.state_dict().items()}
        fixed = isinstance(measurement_set, Tensor)

        def points(step: int) -> Tensor:
            return x0 if step == 0 or fixed else _draw_points(measurement_set)

        def distance(x: Tensor) -> Tensor:
            try:
                return _distance(pair, tgt, x, self.num_functions, self.estimator, critic, settings)
            except ValueError:
                # Non-finite hyperparameters (the loop never steps on a non-finite gradient, so they
                # come from outside) make the weight distributions refuse their scales: a
                # non-finite step, to skip and count like any other.
                if all(bool(torch.isfinite(p).all()) for p in params):
                    raise
                return torch.full((), math.nan, dtype=x.dtype, device=x.device)

        flags = [p.requires_grad for p in params]
        prior.requires_grad_(True)
        try:
            with seeded(seed + 1, x0):
                result = self._optimize(prior, distance, batches=points, params=params, skip_nonfinite=MAX_SKIPPED,
                                        progress=progress, desc=f"match_prior ({self.estimator})")
        except FloatingPointError as err:
            raise FloatingPointError(f"{err}; to match in float64, pass a float64 measurement set") from None
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
        if result.skipped:
            warnings.warn(f"match_prior skipped {result.skipped} of {self.num_steps} steps with non-finite distances "
                          "or gradients (recorded as NaN)", RuntimeWarning, stacklevel=2)
        # One series under two names: "loss" for every Fit, "distance" for what it is here.
        history = {"loss": result.history["loss"], "distance": result.history["loss"].clone()}
        return MatchResult(prior, history, self._record(result, seed), initial_state=initial_state)


def match_prior(net_or_model: nn.Module, weight_prior: WeightPrior | None, target: Any, measurement_set: Any, *,
                estimator: str = "gaussian", num_steps: int = 200, num_functions: int = 128, lr: float = 0.05,
                num_projections: int = 256, critic_steps: int = 200, critic_lr: float = 0.02,
                critic_penalty: float = GRADIENT_PENALTY, critic_threshold: float | None = 0.1,
                critic_hidden: int = CRITIC_HIDDEN, seed: int | None = None, progress: bool = True) -> MatchResult:
    """Fit a weight prior's hyperparameters so the BNN's function prior matches ``target``:
    :class:`PriorMatcher` in one call.

    Tran et al. 2022 (arXiv:2011.12829), Algorithm 1: per step a new measurement set, ``n``
    reparameterised BNN function draws and ``n`` target draws, an estimate of the Wasserstein
    distance and one RMSprop step on the prior's parameters (updated in place).

    Args:
        net_or_model: a :class:`~bayesnets.bnn.BayesianNet` (its prior is fitted) or the bare
            ``nn.Module`` the prior is for.
        weight_prior: the prior to fit (``None`` with a ``BayesianNet``). All its
            ``nn.Parameter``s are optimised; their ``requires_grad`` flags are restored after.
        target, measurement_set: as for :meth:`PriorMatcher.fit` (``data = (target, measurement_set)``).
        estimator, num_functions, num_projections, critic_steps, critic_lr, critic_penalty,
            critic_threshold, critic_hidden: as for :class:`PriorMatcher`.
        num_steps: outer steps (paper: 200 for UCI).
        lr: RMSprop learning rate on the prior's (log-scale) parameters (paper: 0.05 for UCI).
        seed: seed of the run (``None``: drawn from torch's global generator).
        progress: show a tqdm bar.

    Returns:
        A :class:`MatchResult` (a :class:`~inference.training.fit.Fit` of the prior) with the
        distance per step, ``result.distance`` ``[num_steps]``.

    Raises:
        ValueError: measurement points that do not fit the network or the kernel, a kernel that is
            not positive semi-definite on them, target draws of the wrong shape, bad settings.
        TypeError: a target, prior or measurement set of the wrong kind.
        FloatingPointError: more than :data:`MAX_SKIPPED` of the steps were not finite.
    """
    matcher = PriorMatcher(num_steps, estimator=estimator, num_functions=num_functions, lr=lr,
                           num_projections=num_projections, critic_steps=critic_steps, critic_lr=critic_lr,
                           critic_penalty=critic_penalty, critic_threshold=critic_threshold,
                           critic_hidden=critic_hidden, seed=seed)
    return matcher.fit(_prior_network(net_or_model, weight_prior), (target, measurement_set), progress=progress)


def _distance(model: PriorNetwork, tgt: GPTarget | _CallableTarget, x: Tensor, n: int, estimator: str,
              critic: LipschitzCritic | None, settings: Mapping[str, Any]) -> Tensor:
    """One estimate of the distance between the BNN's and the target's functions at ``x``,
    summed over network outputs; differentiable in the prior's parameters."""
    f = _outputs(model.functions(x, n))  # [P, n, M]
    outputs = range(f.shape[0])
    if estimator == "gaussian":
        if isinstance(tgt, GPTarget):
            mean, cov = tgt.moments(x, n)
            means, covs = mean.expand(f.shape[0], -1), cov.expand(f.shape[0], -1, -1)
        else:
            g = _target_draws(tgt, x, n, f.shape[0])
            means, covs = g.mean(1), torch.stack([torch.cov(gp.T) for gp in g])
        roots = sqrtm_psd(covs.double()).to(covs.dtype)
        return sum(moment_matched_w2(f[p], means[p], covs[p], roots[p]) for p in outputs)
    g = _target_draws(tgt, x, n, f.shape[0])
    if estimator == "sliced":
        return sum(sliced_wasserstein(f[p], g[p], settings["num_projections"]) for p in outputs)
    if critic is None or critic.net[0].in_features != x.shape[0]:
        raise ValueError(f"measurement sets must keep one size for the critic (its input), got {x.shape[0]} points")
    with torch.no_grad():  # the critic trains on an independent batch, as in the paper
        f_train = _outputs(model.functions(x, n))
    g_train = _target_draws(tgt, x, n, f.shape[0])
    return sum(critic_wasserstein(f[p], g[p], critic, (f_train[p], g_train[p]), settings["critic_steps"],
                                  settings["critic_lr"], settings["critic_penalty"], settings["critic_threshold"])
               for p in outputs)


def _target_draws(tgt: GPTarget | _CallableTarget, x: Tensor, n: int, outputs: int) -> Tensor:
    """``n`` target draws per network output, ``[P, n, M]`` (a GP gives independent outputs)."""
    if isinstance(tgt, GPTarget):
        return tgt.sample(x, n * outputs).reshape(outputs, n, x.shape[0])
    g = _outputs(tgt.sample(x, n))
    if g.shape[0] != outputs:
        raise ValueError(f"target draws have {g.shape[0]} outputs but the network has {outputs}")
    return g


# ======================================================================== plots
def plot_prior_functions(net_or_model: nn.Module, weight_prior: WeightPrior | None, target: Any, x: Tensor,
                         result: MatchResult | None = None, num_draws: int = 10, feature: int = 0,
                         output: int = 0) -> Figure:
    """Prior function draws of the BNN (before and after matching) beside the target's.

    Args:
        net_or_model, weight_prior, target: as for :func:`match_prior`.
        x: inputs ``[G, d]`` along a path (a 1-D grid, or a line through the input box);
            plotted against ``x[:, feature]``.
        result: the :class:`MatchResult` of a matching: adds a "before" panel with the prior's
            initial state.
        num_draws: functions per panel.
        output: which network output to plot.

    Returns:
        A matplotlib figure (never shown).
    """
    import matplotlib.pyplot as plt

    model = _as_prior_network(net_or_model, weight_prior, x)
    tgt = _as_target(target)
    panels: list[tuple[str, Tensor]] = []
    with torch.no_grad():
        if result is not None:
            before = copy.deepcopy(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                before.prior.load_state_dict(result.initial_state)
            panels.append(("BNN prior before matching", before.functions(x, num_draws)[..., output]))
        label = "BNN prior after matching" if result is not None else "BNN prior"
        panels.append((label, model.functions(x, num_draws)[..., output]))
        g = tgt.sample(x, num_draws)
        panels.append(("target (GP) prior", g if g.dim() == 2 else g[..., output]))
    order = x[:, feature].argsort()
    t = x[order, feature].cpu()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), sharey=True)
    for ax, (title, f) in zip(axes, panels):
        ax.plot(t, f[:, order].T.cpu(), lw=1, alpha=0.8)
        ax.set_title(title)
        ax.set_xlabel(f"x[{feature}]")
    axes[0].set_ylabel("f(x)")
    fig.tight_layout()
    return fig
