"""NNGP and Student-t process regression (scale mixtures of NNGPs) as BoTorch models.

Lee, Yun, Yang & Lee, "Scale Mixtures of Neural Network Gaussian Processes", ICLR 2022
(arXiv 2107.01408). A :class:`ScaleMixtureRegression` conditions a
:class:`~priors.processes.ScaleMixtureNNGP` on ``(train_X, train_Y)``: ``y | σ² ~ N(0, σ² (K + ε I))``
with ``σ²`` the last layer's variance. Three priors on ``σ²`` give three models:

* :class:`TProcessRegression` — ``σ² ~ InvGamma(α, β)``: the Student-t process, all closed form.
  The predictive is a multivariate t with ``2α + n`` degrees of freedom, the NNGP's mean, and
  scale ``(2β + yᵀC⁻¹y)/(2α + n) · (k** - k*ᵀC⁻¹k*)``; the marginal likelihood is the
  multivariate t density of ``y``.
* :class:`NNGPRegression` — ``σ²`` a (learnable) constant: the Gaussian special case, the
  limit of the t-process as ``α → ∞`` with ``β/α`` fixed.
* :class:`BurrXIIRegression` — ``σ² ~ BurrXII(c, d, λ)``, by importance sampling over ``σ²``.

The solve runs in float64 by default (``dtype``) with a Cholesky factor that escalates jitter
(with a warning naming it) when ``K + ε I`` is numerically singular. Hyperparameters (kernel
variances, ``α``, ``β``, ``ε``, ...) are fitted by ML-II, :class:`MarginalLikelihoodTrainer` (or its
thin wrapper :func:`fit_marginal_likelihood`), which returns a :class:`MarginalLikelihoodFit`.

Every model is a ``botorch.models.model.Model``: :meth:`ScaleMixtureRegression.posterior`
returns a :class:`~bayesnets.tprocess.posterior.ScaleMixturePosterior` (a multivariate t for the
t-process) or, for the NNGP, a ``GPyTorchPosterior``; both sample with base samples, so every
BoTorch MC acquisition function works.

Note on fitting ``α``: a scale mixture's marginal likelihood never exceeds the Gaussian one
at the best fixed scale, ``∫ p(σ²) N(y; 0, σ²C) dσ² ≤ max_σ² N(y; 0, σ²C)``, so maximising it
over ``α`` drifts towards ``α → ∞`` (the NNGP). Heavy tails come from holding ``α`` (Burr:
``c``, ``d``) fixed at a small value — a prior, not a fitted quantity — which is the default.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from botorch.acquisition.objective import ScalarizedPosteriorTransform
from botorch.models.model import Model
from botorch.models.transforms.outcome import OutcomeTransform, Standardize
from botorch.posteriors import GPyTorchPosterior, Posterior
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import Kernel
from linear_operator import to_linear_operator
from torch import Tensor, nn
from tqdm.auto import tqdm

from bayesnets.tprocess.posterior import ScaleMixturePosterior
from inference.checks import check_choice, positive_float
from inference.seeding import seeded
from inference.training.checkpoint import read_checkpoint
from inference.training.fit import Fit
from inference.training.loop import LoopResult, optimize
from inference.training.trainer import Trainer
from priors.kernels import NNGPKernel
from priors.processes import (
    BurrXIIScale,
    Conditioned,
    FixedScale,
    InverseGammaScale,
    ScaleMixtureNNGP,
    ScalePrior,
    WeightedScales,
    mixture_log_prob,
)

__all__ = [
    "BurrXIIRegression",
    "MarginalLikelihoodFit",
    "MarginalLikelihoodTrainer",
    "NNGPRegression",
    "ScaleMixtureRegression",
    "TProcessRegression",
    "fit_marginal_likelihood",
    "synthetic_regression",
]

#: Lower bound of the relative noise ``ε`` (as GPyTorch bounds its Gaussian noise): keeps
#: ``K + ε I`` factorisable while the optimiser explores.
MIN_NOISE = 1e-6


def default_kernel() -> NNGPKernel:
    """ReLU NNGP kernel with 3 hidden layers, ``σ_w² = 2`` (He initialisation), ``σ_b² = 0.1``."""
    return NNGPKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1)


def _check_train(train_X: Tensor, train_Y: Tensor) -> None:
    if not isinstance(train_X, Tensor) or train_X.dim() != 2 or not train_X.is_floating_point():
        raise ValueError(f"train_X must be a floating [n, d] tensor, got "
                         f"{list(train_X.shape) if isinstance(train_X, Tensor) else type(train_X).__name__}")
    n = train_X.shape[0]
    if not isinstance(train_Y, Tensor) or train_Y.shape != (n, 1):
        got = list(train_Y.shape) if isinstance(train_Y, Tensor) else type(train_Y).__name__
        raise ValueError(f"train_Y must have shape [n, 1] = {[n, 1]} to match train_X [n, d] = {list(train_X.shape)}, "
                         f"got {got}; use train_Y.unsqueeze(-1) for a 1-D target")
    if n < 1:
        raise ValueError("train_X must hold at least one point")
    if not bool(torch.isfinite(train_X).all()):
        raise ValueError("train_X has NaN or inf entries")
    if not bool(torch.isfinite(train_Y).all()):
        raise ValueError("train_Y has NaN or inf entries; drop those observations")


class ScaleMixtureRegression(Model):
    """Regression with a scale mixture of NNGPs; one output. Subclasses pick the scale prior.

    Args:
        train_X: ``[n, d]`` inputs.
        train_Y: ``[n, 1]`` targets (standardise them, or pass ``outcome_transform=Standardize(m=1)``:
            the prior has mean zero).
        process: the :class:`~priors.processes.ScaleMixtureNNGP`.
        noise: initial relative noise ``ε`` (noise variance ``σ² ε``), > 0.
        learn_noise: fit ``ε`` with the other hyperparameters.
        outcome_transform: optional BoTorch outcome transform applied to ``train_Y``.
        dtype: dtype of the model and of every solve (float64 by default).
    """

    num_outputs = 1

    def __init__(self, train_X: Tensor, train_Y: Tensor, process: ScaleMixtureNNGP, noise: float = 0.1,
                 learn_noise: bool = True, outcome_transform: OutcomeTransform | None = None,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        _check_train(train_X, train_Y)
        noise = positive_float(noise, "noise")
        if noise < MIN_NOISE:
            raise ValueError(f"noise must be >= {MIN_NOISE} (relative to the scale), got {noise}")
        self.process = process
        self.raw_noise = torch.nn.Parameter(torch.zeros((), dtype=dtype), requires_grad=learn_noise)
        self.raw_noise_constraint = GreaterThan(MIN_NOISE)
        self.to(device=train_X.device, dtype=dtype)
        self.noise = noise
        train_Y = train_Y.to(dtype)
        if outcome_transform is not None:
            outcome_transform.train()
            train_Y, _ = outcome_transform(train_Y)
            outcome_transform.eval()
        self.outcome_transform = outcome_transform
        self.train_X = train_X.to(dtype)
        self.train_Y = train_Y
        self._cache: Conditioned | None = None
        self._cache_key = torch.empty(0)

    # ------------------------------------------------------------------ hyperparameters
    @property
    def noise(self) -> Tensor:
        """Relative noise ``ε``: the observation noise variance is ``σ² ε``."""
        return self.raw_noise_constraint.transform(self.raw_noise)

    @noise.setter
    def noise(self, value: float | Tensor) -> None:
        v = torch.as_tensor(positive_float(value, "noise"), dtype=self.raw_noise.dtype, device=self.raw_noise.device)
        with torch.no_grad():
            self.raw_noise.copy_(self.raw_noise_constraint.inverse_transform(v))
        self._cache = None

    @property
    def kernel(self) -> Kernel:
        return self.process.kernel

    @property
    def scale_prior(self) -> ScalePrior:
        return self.process.scale_prior

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size([])

    def train(self, mode: bool = True) -> ScaleMixtureRegression:
        self._cache = None  # hyperparameters may change while training
        return super().train(mode)

    # ------------------------------------------------------------------ inference
    def condition(self) -> Conditioned:
        """The process conditioned on the training data.

        In eval mode the result is detached and cached until a hyperparameter changes (the cache
        is keyed on the values of all parameters, a few scalars).
        """
        if self.training:
            return self.process.condition(self.train_X, self.train_Y.squeeze(-1), self.noise)
        key = torch.cat([p.detach().reshape(-1) for p in self.parameters()])
        if self._cache is None or not torch.equal(self._cache_key, key):
            with torch.no_grad():
                self._cache = self.process.condition(self.train_X, self.train_Y.squeeze(-1), self.noise)
            self._cache_key = key.clone()
        return self._cache

    def log_marginal_likelihood(self) -> Tensor:
        """``log p(train_Y)`` under the current hyperparameters (of the transformed targets)."""
        return self.process.condition(self.train_X, self.train_Y.squeeze(-1), self.noise).log_marginal

    def _check_X(self, X: Tensor) -> None:
        d = self.train_X.shape[-1]
        if not isinstance(X, Tensor) or X.dim() < 2 or X.shape[-1] != d:
            got = list(X.shape) if isinstance(X, Tensor) else type(X).__name__
            raise ValueError(f"X must have shape [*batch, q, d] with d = {d}, got {got}")
        if not bool(torch.isfinite(X).all()):
            raise ValueError("X has NaN or inf entries")

    def posterior(self, X: Tensor, output_indices: list[int] | None = None, observation_noise: bool | Tensor = False,
                  posterior_transform: Any = None, **kwargs: Any) -> Posterior:
        """Posterior predictive at ``X`` ``[*batch, q, d]``; event shape ``[*batch, q, 1]``.

        Args:
            X: query points.
            output_indices: ``None`` or ``[0]`` (one output).
            observation_noise: ``True`` predicts observations (adds ``σ² ε I``).
            posterior_transform: e.g. a ``ScalarizedPosteriorTransform``.

        Returns:
            A :class:`~bayesnets.tprocess.posterior.ScaleMixturePosterior` (a multivariate t for the
            t-process), or a ``GPyTorchPosterior`` for the NNGP.
        """
        if output_indices not in (None, [0]):
            raise ValueError(f"output_indices must be None or [0] (one output), got {output_indices!r}")
        if isinstance(observation_noise, Tensor):
            raise ValueError("observation_noise must be a bool: the noise is the model's own (σ² ε)")
        self._check_X(X)
        cond = self.condition()
        loc, cov, mixing = self.process.predict(cond, X.to(self.train_X.dtype), bool(observation_noise))
        loc, cov = loc.to(X.dtype), cov.to(X.dtype)
        if isinstance(self.scale_prior, FixedScale):
            post: Posterior = GPyTorchPosterior(MultivariateNormal(loc, to_linear_operator(mixing.mean.to(cov) * cov)))
        else:
            post = ScaleMixturePosterior(loc, cov, mixing)
        ot = self.outcome_transform
        if ot is not None:
            if isinstance(ot, Standardize) and isinstance(post, ScaleMixturePosterior):
                post = post.affine(ot.stdvs.squeeze().to(X.dtype), ot.means.squeeze().to(X.dtype))
            else:
                post = ot.untransform_posterior(post)
        if posterior_transform is not None:
            affine = isinstance(posterior_transform, ScalarizedPosteriorTransform)
            if affine and isinstance(post, ScaleMixturePosterior):
                post = post.affine(posterior_transform.weights.squeeze(), posterior_transform.offset)
            else:
                post = posterior_transform(post)
        return post

    def predictive_log_prob(self, X: Tensor, Y: Tensor) -> Tensor:
        """Pointwise log-density of observations ``Y`` ``[m, 1]`` at ``X`` ``[m, d]``: ``[m]``.

        In the units of ``train_Y`` as given (``Standardize`` is undone; other outcome
        transforms are not supported here).
        """
        self._check_X(X)
        if X.dim() != 2 or Y.shape != (X.shape[0], 1):
            raise ValueError(f"X must be [m, d] and Y [m, 1], got {list(X.shape)} and {list(Y.shape)}")
        if self.outcome_transform is not None and not isinstance(self.outcome_transform, Standardize):
            raise ValueError("predictive_log_prob supports no outcome transform or Standardize only")
        cond = self.condition()
        loc, cov, mixing = self.process.predict(cond, X.to(self.train_X.dtype), observation_noise=True)
        var = cov.diagonal(dim1=-2, dim2=-1)
        y = Y.squeeze(-1).to(loc)
        log_jac = torch.zeros((), dtype=loc.dtype, device=loc.device)
        if self.outcome_transform is not None:
            mean, std = self.outcome_transform.means.squeeze().to(loc), self.outcome_transform.stdvs.squeeze().to(loc)
            y, log_jac = (y - mean) / std, std.log()
        return mixture_log_prob(y, loc, var, mixing) - log_jac

    def predictive_nll(self, X: Tensor, Y: Tensor) -> Tensor:
        """Mean negative log predictive density of observations ``Y`` ``[m, 1]`` at ``X`` ``[m, d]``."""
        return -self.predictive_log_prob(X, Y).mean()


class TProcessRegression(ScaleMixtureRegression):
    """Student-t process regression: a scale mixture of NNGPs with ``σ² ~ InvGamma(α, β)``.

    Args:
        train_X: ``[n, d]`` inputs.
        train_Y: ``[n, 1]`` targets.
        kernel: unit-scale GPyTorch kernel (default :func:`default_kernel`, a 3-layer ReLU NNGP).
        alpha: shape of the inverse-gamma prior (> 0); the prior process has ``2 alpha``
            degrees of freedom, the posterior ``2 alpha + n``.
        beta: rate (> 0); ``beta / alpha`` is the prior scale of the kernel.
        noise: initial relative noise ``ε``.
        learn_alpha: fit ``alpha`` too (off by default: maximising the marginal likelihood drives
            ``alpha → ∞``, see the module docstring).
        learn_beta, learn_noise: fit ``beta`` / ``ε``.
        outcome_transform, dtype: as :class:`ScaleMixtureRegression`.

    Example:
        >>> model = TProcessRegression(train_X, train_Y, alpha=2.0, beta=2.0)
        >>> fit_marginal_likelihood(model)
        >>> post = model.posterior(test_X)          # MultivariateT-like ScaleMixturePosterior
        >>> nll = model.predictive_nll(test_X, test_Y)
    """

    def __init__(self, train_X: Tensor, train_Y: Tensor, kernel: Kernel | None = None, alpha: float = 2.0,
                 beta: float = 2.0, noise: float = 0.1, *, learn_alpha: bool = False, learn_beta: bool = True,
                 learn_noise: bool = True, outcome_transform: OutcomeTransform | None = None,
                 dtype: torch.dtype = torch.float64) -> None:
        prior = InverseGammaScale(alpha, beta, learn_alpha=learn_alpha, learn_beta=learn_beta)
        process = ScaleMixtureNNGP(default_kernel() if kernel is None else kernel, prior)
        super().__init__(train_X, train_Y, process, noise, learn_noise, outcome_transform, dtype)

    @property
    def alpha(self) -> Tensor:
        return self.scale_prior.alpha

    @property
    def beta(self) -> Tensor:
        return self.scale_prior.beta

    @property
    def df(self) -> Tensor:
        """Degrees of freedom of the posterior predictive, ``2α + n``."""
        return 2 * self.alpha + self.train_X.shape[0]


class NNGPRegression(ScaleMixtureRegression):
    """NNGP regression: the Gaussian special case, ``σ² = scale`` fixed (learnable by default).

    Args:
        train_X, train_Y, kernel, noise, learn_noise, outcome_transform, dtype: as :class:`TProcessRegression`.
        scale: initial last-layer variance ``σ²`` (> 0).
        learn_scale: fit ``scale``.
    """

    def __init__(self, train_X: Tensor, train_Y: Tensor, kernel: Kernel | None = None, scale: float = 1.0,
                 noise: float = 0.1, *, learn_scale: bool = True, learn_noise: bool = True,
                 outcome_transform: OutcomeTransform | None = None, dtype: torch.dtype = torch.float64) -> None:
        process = ScaleMixtureNNGP(default_kernel() if kernel is None else kernel, FixedScale(scale, learn_scale))
        super().__init__(train_X, train_Y, process, noise, learn_noise, outcome_transform, dtype)

    @property
    def scale(self) -> Tensor:
        return self.scale_prior.scale


class BurrXIIRegression(ScaleMixtureRegression):
    """Regression with ``σ² ~ BurrXII(c, d, scale)``, by importance sampling over ``σ²``.

    Args:
        train_X, train_Y, kernel, noise, learn_noise, outcome_transform, dtype: as :class:`TProcessRegression`.
        c, d: Burr XII shapes (> 0), held fixed unless ``learn_shape``.
        scale: Burr XII scale ``λ`` (> 0), fitted unless ``learn_scale=False``.
        num_samples, proposal: importance sampling settings of :class:`~priors.processes.ScalePrior`.
    """

    def __init__(self, train_X: Tensor, train_Y: Tensor, kernel: Kernel | None = None, c: float = 2.0,
                 d: float = 1.0, scale: float = 1.0, noise: float = 0.1, *, learn_shape: bool = False,
                 learn_scale: bool = True, learn_noise: bool = True, num_samples: int = 1024,
                 proposal: str = "likelihood", outcome_transform: OutcomeTransform | None = None,
                 dtype: torch.dtype = torch.float64) -> None:
        prior = BurrXIIScale(c, d, scale, learn_shape=learn_shape, learn_scale=learn_scale,
                             num_samples=num_samples, proposal=proposal)
        process = ScaleMixtureNNGP(default_kernel() if kernel is None else kernel, prior)
        super().__init__(train_X, train_Y, process, noise, learn_noise, outcome_transform, dtype)

    @property
    def effective_sample_size(self) -> Tensor:
        """Kish effective sample size of the importance weights over ``σ²`` at the current fit."""
        mixing = self.condition().mixing
        assert isinstance(mixing, WeightedScales)
        return mixing.effective_sample_size


# ====================================================================== fitting
#: Step size of each ML-II optimiser when none is given.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.05}

#: L-BFGS settings of the ML-II fit: a strong-Wolfe line search (its step is safe on the
#: evidence's curved landscape) and tolerances tight enough for a handful of hyperparameters.
LBFGS_OPTIONS = {"line_search_fn": "strong_wolfe", "tolerance_grad": 1e-7, "tolerance_change": 1e-10}

#: The keys of the dict :func:`fit_marginal_likelihood` returned before it returned a fit.
_OLD_KEYS = ("loss", "jitter_warnings", "stopped_early")


class _Unusable(Exception):
    """The objective cannot be evaluated at this point: the fit stops there and keeps its best."""


class _Best(nn.Module):
    """The best point seen (loss and parameter values) as buffers, so that a checkpoint carries
    it and a resumed fit keeps the best of the whole run, not of its second part."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__()
        self.register_buffer("loss", torch.tensor(math.inf, dtype=torch.float64))
        for i, p in enumerate(params):
            self.register_buffer(f"value{i}", p.detach().clone())

    def offer(self, loss: float, params: list[nn.Parameter]) -> None:
        if loss < float(self.loss):
            self.loss.fill_(loss)
            for i, p in enumerate(params):
                getattr(self, f"value{i}").copy_(p.detach())

    @torch.no_grad()
    def restore(self, params: list[nn.Parameter]) -> None:
        for i, p in enumerate(params):
            p.copy_(getattr(self, f"value{i}"))


@dataclass
class MarginalLikelihoodFit(Fit):
    """What :class:`MarginalLikelihoodTrainer` returns.

    Attributes:
        module: the fitted :class:`ScaleMixtureRegression` (in eval mode, at the best point seen).
        history: ``"loss"``: the negative log marginal likelihood per training point at every
            evaluation of the objective, in order (``[num_steps + 1]`` for Adam: each step's
            start point and the last point; up to ``1.25 num_steps`` for L-BFGS, whose line
            searches evaluate it several times per iteration).
        attrs: the trainer's record plus ``jitter_warnings`` (Cholesky factors that needed
            jitter), ``stopped_early`` (the fit hit an unusable point), ``stop_reason`` (why, or
            ``None``), ``best_loss`` and ``evaluations``.

    Indexing it as the dict ``fit_marginal_likelihood`` used to return (``fit["loss"]``,
    ``fit["jitter_warnings"]``, ``fit["stopped_early"]``) still works for one release, with a
    ``DeprecationWarning``.
    """

    @property
    def jitter_warnings(self) -> int:
        """How many Cholesky factors during the fit needed jitter."""
        return int(self.attrs["jitter_warnings"])

    @property
    def stopped_early(self) -> bool:
        """Whether the fit stopped at an unusable point (and kept the best one before it)."""
        return bool(self.attrs["stopped_early"])

    def __getitem__(self, key: str) -> Any:
        if key not in _OLD_KEYS:
            raise KeyError(key)
        new = 'fit.history["loss"]' if key == "loss" else f"fit.attrs[{key!r}]"
        warnings.warn(f"fit_marginal_likelihood returns a MarginalLikelihoodFit: fit[{key!r}] is deprecated, use "
                      f"{new} (dict access goes in the next release)", DeprecationWarning, stacklevel=2)
        return self.history["loss"].tolist() if key == "loss" else self.attrs[key]


class MarginalLikelihoodTrainer(Trainer):
    """ML-II: maximise ``log p(train_Y)`` over every parameter of a regression model with ``requires_grad``.

    Lee, Yun, Yang & Lee, arXiv 2107.01408 (P12): the hyperparameters of a scale mixture of
    NNGPs (kernel variances, ``β``, the noise ``ε``, ...) by the evidence of the training data,
    which the model holds (``fit(model)``, no ``data``). The objective is ``-log p(y) / n``.

    The best parameters seen are kept: if the objective reaches a point where ``K + ε I`` cannot
    be factorised or its value is not finite, the fit stops there with a warning naming the fix
    and the best point so far is restored. Jitter warnings raised while line searches explore
    are collected into one summary warning, and counted.

    Two optimisers: ``"lbfgs"`` (default), one L-BFGS call of up to ``num_steps`` iterations,
    each with a strong-Wolfe line search (:data:`LBFGS_OPTIONS`), run as one step of the shared
    loop (:func:`inference.training.loop.optimize`); or ``"adam"``, ``num_steps`` steps of the
    loop (with its schedule, clipping and checkpoints; the best point travels in the checkpoint).

    Args:
        num_steps: L-BFGS iterations or Adam steps.
        optimizer: ``"lbfgs"`` or ``"adam"``.
        lr: step size (default 1.0 for L-BFGS, 0.05 for Adam).
        seed: the fit draws nothing at random; a seed only runs it under
            :func:`~inference.seeding.seeded` (for models that do draw).
        Other arguments as for :class:`~inference.training.trainer.Trainer`; with L-BFGS
        (one long call with its own line search) ``schedule``, ``clip``, ``amp``,
        ``weight_decay`` and checkpoints are not available, and ``batch_size`` never is (the
        evidence needs every training point).

    Example:
        >>> fit = MarginalLikelihoodTrainer(num_steps=50).fit(TProcessRegression(train_X, train_Y))
        >>> fit.history["loss"], fit.attrs["jitter_warnings"], fit.stopped_early
    """

    def __init__(self, num_steps: int = 100, *, optimizer: str = "lbfgs", lr: float | None = None,
                 **loop: Any) -> None:
        check_choice(optimizer, "optimizer", tuple(DEFAULT_LR))
        super().__init__(num_steps, optimizer=optimizer, lr=DEFAULT_LR[optimizer] if lr is None else lr, **loop)
        if self.batch_size is not None:
            raise ValueError(f"batch_size must be None: the marginal likelihood needs all the training data, got "
                             f"{self.batch_size}")
        if optimizer == "lbfgs":
            refused = [name for name, value in (("schedule", self.schedule), ("clip", self.clip), ("amp", self.amp),
                                                ("weight_decay", self.weight_decay),
                                                ("checkpoint_path", self.checkpoint_path)) if value]
            if refused:
                raise ValueError(f"{', '.join(refused)}: not available with optimizer='lbfgs' (one L-BFGS call with "
                                 "its own line search); use optimizer='adam'")

    def fit(self, model: ScaleMixtureRegression, data: None = None, progress: bool = True) -> MarginalLikelihoodFit:
        """Fit ``model``'s hyperparameters in place; it is left in eval mode at the best point seen.

        Args:
            model: any :class:`ScaleMixtureRegression` (it holds ``train_X`` ``[n, d]`` and
                ``train_Y`` ``[n, 1]``).
            data: must be ``None``: the data are the model's.
            progress: show a tqdm bar (L-BFGS: one tick per evaluation).

        Returns:
            A :class:`MarginalLikelihoodFit`.

        Raises:
            TypeError: not a :class:`ScaleMixtureRegression`, or ``data`` given.
            ValueError: no parameter has ``requires_grad``; a checkpoint written with other settings.
        """
        if not isinstance(model, ScaleMixtureRegression):
            raise TypeError(f"model must be a ScaleMixtureRegression, got {type(model).__name__}")
        if data is not None:
            raise TypeError("data must be None: the model holds its training data (train_X, train_Y)")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no parameter with requires_grad=True to fit")
        n = model.train_Y.shape[0]
        lbfgs = self.optimizer == "lbfgs"
        desc = f"fit {type(model).__name__}"
        best = _Best(params)
        restored: list[float] = []  # a resumed Adam fit's evaluations before the checkpoint
        checkpoint = self.checkpoint_path
        if checkpoint is not None and self.resume and Path(checkpoint).exists():
            restored = read_checkpoint(checkpoint)[0]["history.loss"].tolist()
        trace: list[float] = []
        bar = tqdm(total=self.num_steps, disable=not progress or not lbfgs, desc=desc)

        def objective() -> Tensor:
            try:
                loss = -model.log_marginal_likelihood() / n
            except ValueError as err:  # K + εI cannot be factorised
                raise _Unusable(str(err)) from err
            if not bool(torch.isfinite(loss)):
                raise _Unusable(f"the log marginal likelihood is not finite ({loss.item()})")
            trace.append(loss.item())
            best.offer(trace[-1], params)
            if lbfgs:  # the loop sees one step; report the evaluations
                bar.update(1)
                bar.set_postfix(nlml=trace[-1])
                if self._callback is not None:
                    self._callback(len(trace), {"loss": trace[-1]})
            return loss

        result: LoopResult | None = None
        stopped: str | None = None
        t0 = time.perf_counter()
        model.train()
        # Nothing here draws at random, so without a seed the caller's streams are not touched at all.
        streams = seeded(self.seed, model.train_X) if self.seed is not None else contextlib.nullcontext()
        with warnings.catch_warnings(record=True) as caught, streams:
            warnings.simplefilter("always", RuntimeWarning)
            try:
                if lbfgs:
                    # One loop step is one optimizer.step(closure): the whole L-BFGS run.
                    result = optimize(model, objective, 1, params=params, optimizer="lbfgs", lr=self.lr,
                                      optimizer_options={**LBFGS_OPTIONS, "max_iter": self.num_steps},
                                      progress=False, desc=desc)
                else:
                    result = self._optimize({"model": model, "best": best}, objective, params=params,
                                            progress=progress, desc=desc)
                    objective()  # the last step's point, so that the best has seen it
            except _Unusable as err:
                stopped = str(err)
            finally:
                bar.close()
        best.restore(params)
        jitter_warnings = sum("jitter" in str(w.message) for w in caught)
        for w in caught:
            if "jitter" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        model.eval()
        if stopped is not None:
            warnings.warn(f"the fit stopped early at an unusable point ({stopped}); kept the best parameters seen "
                          f"(loss {float(best.loss):.4g}). Try a smaller lr or a larger noise.", RuntimeWarning,
                          stacklevel=2)
        if jitter_warnings:
            final = model.condition().jitter
            warnings.warn(f"{jitter_warnings} Cholesky factors during the fit needed jitter (the fitted model needs "
                          f"{final:.1e} x mean(diag)); consider a larger noise floor or float64",
                          RuntimeWarning, stacklevel=2)
        history = restored + trace
        if result is None:  # stopped early: the loop did not get to report
            result = LoopResult({}, time.perf_counter() - t0, len(restored), 0)
        attrs = self._record(result, self.seed, jitter_warnings=jitter_warnings, stopped_early=stopped is not None,
                             stop_reason=stopped, best_loss=float(best.loss), evaluations=len(history))
        return MarginalLikelihoodFit(model, {"loss": torch.tensor(history, dtype=torch.float64)}, attrs)


def fit_marginal_likelihood(model: ScaleMixtureRegression, num_steps: int = 100, optimizer: str = "lbfgs",
                            lr: float | None = None, progress: bool = False) -> MarginalLikelihoodFit:
    """Maximise ``log p(train_Y)`` over every parameter of ``model`` with ``requires_grad``:
    :class:`MarginalLikelihoodTrainer` in one call.

    The best parameters seen are kept: if a step reaches a point where ``K + ε I`` cannot be
    factorised or the objective is not finite, the fit stops there with a warning and the best
    point so far is restored.

    Args:
        model: any :class:`ScaleMixtureRegression`.
        num_steps: L-BFGS iterations (each with a strong-Wolfe line search) or Adam steps.
        optimizer: ``"lbfgs"`` (default) or ``"adam"``.
        lr: step size (default 1.0 for L-BFGS, 0.05 for Adam).
        progress: show a tqdm bar.

    Returns:
        A :class:`MarginalLikelihoodFit`: ``history["loss"]`` the per-point negative log marginal
        likelihood after each evaluation, ``attrs["jitter_warnings"]`` how many Cholesky factors
        needed jitter, ``attrs["stopped_early"]`` whether the fit hit an unusable point (it was
        the dict ``{"loss", "jitter_warnings", "stopped_early"}``, which ``fit[key]`` still
        reads for one release). The model is left in eval mode.
    """
    return MarginalLikelihoodTrainer(num_steps, optimizer=optimizer, lr=lr).fit(model, progress=progress)


# ====================================================================== data
#: The paper's synthetic sets (arXiv 2107.01408, "Synthetic A/B"): a GP draw with an RBF kernel
#: of unit lengthscale at unit-spaced inputs, plus Gaussian noise of scale 0.2 on 100 points
#: or Cauchy noise of scale 0.8 on 300 points.
SYNTHETIC = {"gaussian": (100, 0.2), "cauchy": (300, 0.8)}


def synthetic_regression(noise: str = "cauchy", num: int | None = None, noise_scale: float | None = None,
                         seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The paper's synthetic regression data: ``X`` ``[num, 1]`` and ``y`` ``[num, 1]``.

    ``x = linspace(-num/2, num/2, num)``, ``y = f(x) + noise_scale · e`` with ``f ~ GP(0, exp(-(x-x')²/2))``
    and ``e`` standard normal (``noise="gaussian"``) or standard Cauchy (``noise="cauchy"``).

    Args:
        noise: ``"gaussian"`` (Synthetic A defaults: 100 points, scale 0.2) or ``"cauchy"``
            (Synthetic B: 300 points, scale 0.8).
        num, noise_scale: override the defaults.
        seed: seed of a private generator.
    """
    if noise not in SYNTHETIC:
        raise ValueError(f"noise must be one of {sorted(SYNTHETIC)}, got {noise!r}")
    default_num, default_scale = SYNTHETIC[noise]
    num = default_num if num is None else num
    noise_scale = default_scale if noise_scale is None else positive_float(noise_scale, "noise_scale")
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(-num / 2, num / 2, num, dtype=torch.float64)
    cov = torch.exp(-0.5 * (x[:, None] - x[None, :]).square())
    chol = torch.linalg.cholesky(cov + 1e-8 * torch.eye(num, dtype=torch.float64))  # RBF at unit spacing: well posed
    f = chol @ torch.randn(num, generator=gen, dtype=torch.float64)
    if noise == "gaussian":
        e = torch.randn(num, generator=gen, dtype=torch.float64)
    else:
        e = torch.tan(math.pi * (torch.rand(num, generator=gen, dtype=torch.float64) - 0.5))
    return x.unsqueeze(-1).to(dtype), (f + noise_scale * e).unsqueeze(-1).to(dtype)
