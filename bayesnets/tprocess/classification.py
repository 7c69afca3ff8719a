"""Sparse variational classification with a Student-t process prior (scale mixture of NNGPs).

Lee, Yun, Yang & Lee, arXiv 2107.01408, section "inference for classification". One latent
function per class, ``f_c | σ² ~ GP(0, σ² k)``, all sharing the last-layer variance
``σ² ~ InvGamma(α, β)``, and a softmax likelihood. With ``M`` inducing points ``Z`` and
``u_c = f_c(Z)`` the variational family is

    q(σ²) = InvGamma(a, b),     q(u_c | σ²) = N(m_c, σ² S_c),

so that ``q(f_c(x) | σ²) = N(A m_c, σ² (A S_c Aᵀ + k(x, x) - A K_uf))`` with ``A = K_xu K_uu⁻¹``:
the location does not move with ``σ²`` and, marginally, each latent is a Student t with ``2a``
degrees of freedom. The ELBO is

    Σ_i E_q[log softmax(f(x_i))_{y_i}] - KL,
    KL = Σ_c ½[tr(K_uu⁻¹ S_c) + (a/b) m_cᵀ K_uu⁻¹ m_c - M + log|K_uu| - log|S_c|] + KL(IG(a,b) ‖ IG(α,β)),

with ``E_q[1/σ²] = a/b``; the expected log-likelihood is estimated by Monte Carlo with
reparameterised ``σ²`` (implicit gamma gradients) and Gaussian noise. ``alpha=None`` drops the
scale mixture (``σ² = 1``): the sparse variational NNGP classifier it is compared against.
Fitting is :class:`SparseTProcessTrainer` (Adam on minibatches in the shared training loop,
:func:`inference.training.loop.optimize`), or its thin wrapper :func:`fit_classifier`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from gpytorch.kernels import Kernel
from torch import Tensor, nn
from torch.distributions import Gamma, kl_divergence
from torch.nn import functional as F

from bayesnets.tprocess.regression import default_kernel
from inference.checks import check_int, positive_float
from inference.seeding import base_seed, seeded
from inference.training.fit import Fit
from inference.training.loop import Minibatches
from inference.training.trainer import Trainer
from priors.processes import InverseGamma, psd_cholesky

__all__ = ["SparseTProcessClassifier", "SparseTProcessTrainer", "fit_classifier", "inducing_points_by_class"]

#: Relative jitter on ``K_uu`` (times its mean diagonal): inducing points may move close together.
KUU_JITTER = 1e-6


def inducing_points_by_class(X: Tensor, y: Tensor, num_inducing: int, seed: int = 0) -> Tensor:
    """``num_inducing`` training inputs, allocated evenly across classes (as in the paper): ``[M, d]``."""
    classes = torch.unique(y)
    gen = torch.Generator().manual_seed(seed)
    per_class = [num_inducing // len(classes) + (i < num_inducing % len(classes)) for i in range(len(classes))]
    picks = []
    for c, k in zip(classes.tolist(), per_class, strict=True):
        idx = torch.nonzero(y == c).squeeze(-1)
        picks.append(idx[torch.randperm(len(idx), generator=gen)[: min(k, len(idx))].to(idx.device)])
    return X[torch.cat(picks)].clone()


class SparseTProcessClassifier(nn.Module):
    """Multi-class sparse variational classifier with a t-process (or NNGP) prior.

    Args:
        inducing_points: initial ``Z`` ``[M, d]`` (learnable), e.g. :func:`inducing_points_by_class`.
        num_classes: ``C >= 2``.
        kernel: unit-scale GPyTorch kernel (default: 3-layer ReLU NNGP).
        alpha, beta: inverse-gamma prior of ``σ²`` (> 0); ``alpha=None`` gives the Gaussian
            model with ``σ² = 1``.
    """

    def __init__(self, inducing_points: Tensor, num_classes: int, kernel: Kernel | None = None,
                 alpha: float | None = 2.0, beta: float | None = 2.0) -> None:
        super().__init__()
        if not isinstance(inducing_points, Tensor) or inducing_points.dim() != 2:
            got = list(inducing_points.shape) if isinstance(inducing_points, Tensor) else repr(inducing_points)
            raise ValueError(f"inducing_points must be a [M, d] tensor, got {got}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if (alpha is None) != (beta is None):
            raise ValueError("alpha and beta must both be numbers (t-process) or both None (Gaussian)")
        self.kernel = default_kernel() if kernel is None else kernel
        self.kernel.to(inducing_points)
        self.num_classes = num_classes
        self.heavy_tailed = alpha is not None
        M = inducing_points.shape[0]
        self.inducing_points = nn.Parameter(inducing_points.clone())
        self.q_mu = nn.Parameter(inducing_points.new_zeros(num_classes, M))
        # start from q(u | σ²) = p(u | σ²): S_c = K_uu
        with torch.no_grad():
            chol = self._kuu_cholesky()
        self.q_tril = nn.Parameter(chol.tril(-1).expand(num_classes, M, M).clone())
        self.q_log_diag = nn.Parameter(chol.diagonal().log().expand(num_classes, M).clone())
        if self.heavy_tailed:
            a, b = positive_float(alpha, "alpha"), positive_float(beta, "beta")
            like = {"dtype": inducing_points.dtype, "device": inducing_points.device}
            self.register_buffer("prior_alpha", torch.tensor(a, **like))
            self.register_buffer("prior_beta", torch.tensor(b, **like))
            self.q_log_a = nn.Parameter(torch.tensor(math.log(a), **like))
            self.q_log_b = nn.Parameter(torch.tensor(math.log(b), **like))

    # ------------------------------------------------------------------ pieces
    def _kuu_cholesky(self) -> Tensor:
        Z = self.inducing_points
        K = self.kernel(Z, Z).to_dense()
        K = K + KUU_JITTER * K.diagonal().mean() * torch.eye(Z.shape[0], dtype=K.dtype, device=K.device)
        return psd_cholesky(K, "inducing-point kernel matrix K_uu")[0]

    @property
    def q_scale_tril(self) -> Tensor:
        """Cholesky factors of ``S_c``: ``[C, M, M]``."""
        return self.q_tril.tril(-1) + torch.diag_embed(self.q_log_diag.exp())

    def scale_posterior(self) -> InverseGamma | None:
        """``q(σ²) = InvGamma(a, b)`` (``None`` for the Gaussian model)."""
        if not self.heavy_tailed:
            return None
        return InverseGamma(self.q_log_a.exp(), self.q_log_b.exp(), validate_args=False)

    def kl_divergence(self, chol_uu: Tensor | None = None) -> Tensor:
        """``KL(q(u, σ²) ‖ p(u, σ²))`` in closed form."""
        L = self._kuu_cholesky() if chol_uu is None else chol_uu
        M = L.shape[-1]
        Ls = self.q_scale_tril
        trace = torch.linalg.solve_triangular(L, Ls, upper=False).square().sum((-1, -2))  # [C]
        maha = torch.linalg.solve_triangular(L, self.q_mu.unsqueeze(-1), upper=False).square().sum((-1, -2))
        logdet_k = 2 * L.diagonal().log().sum()
        logdet_s = 2 * self.q_log_diag.sum(-1)
        if self.heavy_tailed:
            a, b = self.q_log_a.exp(), self.q_log_b.exp()
            inv_scale_mean = a / b  # E_q[1/σ²]: 1/σ² ~ Gamma(a, rate=b)
            # KL is invariant under σ² -> 1/σ²: compare the Gamma laws of the precision
            kl_scale = kl_divergence(Gamma(a, b), Gamma(self.prior_alpha, self.prior_beta))
        else:
            inv_scale_mean, kl_scale = 1.0, torch.zeros((), dtype=L.dtype, device=L.device)
        kl_u = 0.5 * (trace + inv_scale_mean * maha - M + logdet_k - logdet_s).sum()
        return kl_u + kl_scale

    def latent_marginals(self, X: Tensor, chol_uu: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Location ``[C, B]`` and unit-scale variance ``[C, B]`` of ``q(f_c(x) | σ²)`` at ``X`` ``[B, d]``."""
        self._check_X(X)
        L = self._kuu_cholesky() if chol_uu is None else chol_uu
        Z = self.inducing_points
        k_uf = self.kernel(Z, X).to_dense()  # [M, B]
        A = torch.cholesky_solve(k_uf, L)  # K_uu⁻¹ K_uf
        loc = self.q_mu @ A
        k_ff = self.kernel(X, diag=True)
        cond = (k_ff - (k_uf * A).sum(0)).clamp_min(0.0)  # [B]
        var_s = (self.q_scale_tril.mT @ A).square().sum(-2)  # [C, B]
        return loc, cond + var_s

    def _sample_scales(self, shape: torch.Size, like: Tensor) -> Tensor:
        q = self.scale_posterior()
        if q is None:
            return torch.ones(shape, dtype=like.dtype, device=like.device)
        return q.rsample(shape)

    def _check_X(self, X: Tensor) -> None:
        d = self.inducing_points.shape[-1]
        if not isinstance(X, Tensor) or X.dim() != 2 or X.shape[-1] != d:
            raise ValueError(f"X must be a [B, d] tensor with d = {d}, got "
                             f"{list(X.shape) if isinstance(X, Tensor) else type(X).__name__}")

    def _check_y(self, X: Tensor, y: Tensor) -> None:
        if not isinstance(y, Tensor) or y.shape != X.shape[:1] or y.is_floating_point():
            raise ValueError(f"y must be an integer tensor [B] = {list(X.shape[:1])} of class labels, got "
                             f"{list(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
        if bool(((y < 0) | (y >= self.num_classes)).any()):
            raise ValueError(f"class labels must lie in [0, {self.num_classes - 1}]")

    # ------------------------------------------------------------------ objectives
    def elbo(self, X: Tensor, y: Tensor, num_data: int | None = None, num_samples: int = 8) -> Tensor:
        """Evidence lower bound for the minibatch ``(X [B, d], y [B])`` scaled to ``num_data`` points."""
        self._check_X(X)
        self._check_y(X, y)
        num_data = X.shape[0] if num_data is None else int(num_data)
        L = self._kuu_cholesky()
        loc, var = self.latent_marginals(X, L)
        # the classes of one point share σ²; points are independent under the marginals
        sigma2 = self._sample_scales(torch.Size([num_samples, 1, X.shape[0]]), loc)
        f = loc + (sigma2 * var).sqrt() * torch.randn(num_samples, *loc.shape, dtype=loc.dtype, device=loc.device)
        log_lik = F.log_softmax(f, dim=1).gather(1, y.view(1, 1, -1).expand(num_samples, 1, -1)).squeeze(1)
        return num_data * log_lik.mean() - self.kl_divergence(L)

    @torch.no_grad()
    def predict_proba(self, X: Tensor, num_samples: int = 256) -> Tensor:
        """Predictive class probabilities ``[B, C]`` (Monte Carlo over ``q(σ²)`` and ``q(f | σ²)``)."""
        loc, var = self.latent_marginals(X)
        sigma2 = self._sample_scales(torch.Size([num_samples, 1, X.shape[0]]), loc)
        f = loc + (sigma2 * var).sqrt() * torch.randn(num_samples, *loc.shape, dtype=loc.dtype, device=loc.device)
        return F.softmax(f, dim=1).mean(0).mT

    def predictive_nll(self, X: Tensor, y: Tensor, num_samples: int = 256) -> Tensor:
        """Mean negative log predictive probability of labels ``y`` ``[B]``."""
        self._check_y(X, y)
        p = self.predict_proba(X, num_samples).gather(1, y.unsqueeze(-1)).squeeze(-1)
        return -p.clamp_min(torch.finfo(p.dtype).tiny).log().mean()


class _Reshuffled(Minibatches):
    """Whole-data batches in a fresh random order every step.

    :class:`~inference.training.loop.Minibatches` hands out the whole data unshuffled when the
    batch is all of it; this classifier has always drawn it shuffled (one permutation per step
    from the same generator). The order matters to the numbers: it pairs each point with its
    Monte Carlo noise. Kept so that a seed gives the fits it gave before.
    """

    def __next__(self) -> tuple[Tensor, ...]:
        self._perm, self._pos = torch.randperm(self.num_rows, generator=self.generator), self.num_rows
        idx = self._perm.to(self.tensors[0].device)
        return tuple(t[idx] for t in self.tensors)


class SparseTProcessTrainer(Trainer):
    """Maximise a :class:`SparseTProcessClassifier`'s ELBO with Adam on minibatches.

    Lee, Yun, Yang & Lee, arXiv 2107.01408 (P12), "inference for classification": each step
    takes ``batch_size`` rows (a fresh random order every epoch, from a CPU generator seeded by
    ``seed``), estimates the ELBO of the whole data set from them by Monte Carlo with
    ``num_samples`` draws per point (noise from torch's global stream, seeded by ``seed`` too),
    and takes one optimiser step on every parameter with ``requires_grad``.

    Args:
        num_steps: optimiser steps.
        num_samples: Monte Carlo draws of ``(σ², f)`` per point in each ELBO estimate.
        batch_size: rows per step (default: all ``N``; more than ``N`` means all).
        lr: Adam's learning rate.
        Other arguments as for :class:`~inference.training.trainer.Trainer` (optimiser, schedule,
        clipping, seed, checkpoints, callback).

    Example:
        >>> fit = SparseTProcessTrainer(num_steps=300, batch_size=64, seed=0).fit(model, (X, y))
        >>> fit.history["elbo"]        # [300]: the ELBO per data point at every step
    """

    def __init__(self, num_steps: int = 500, *, num_samples: int = 8, lr: float = 0.01, **loop: Any) -> None:
        super().__init__(num_steps, lr=lr, **loop)
        self.num_samples = check_int(num_samples, "num_samples")

    def fit(self, model: SparseTProcessClassifier, data: tuple[Tensor, Tensor], progress: bool = True) -> Fit:
        """Train ``model`` (in place) on ``data = (X, y)``: inputs ``[N, d]`` and labels ``[N]``.

        Returns:
            A :class:`~inference.training.fit.Fit` of ``model`` with ``history["loss"]`` (the
            negative ELBO per data point, ``[num_steps]``, the quantity minimised) and
            ``history["elbo"]`` (its negative). The model is left in eval mode.

        Raises:
            ValueError: ``X`` or ``y`` of the wrong shape or kind, labels out of range.
            FloatingPointError: the ELBO became non-finite (the message names the fix).
        """
        if not isinstance(model, SparseTProcessClassifier):
            raise TypeError(f"model must be a SparseTProcessClassifier, got {type(model).__name__}")
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise TypeError(f"data must be (X, y): inputs [N, d] and labels [N], got {type(data).__name__}")
        X, y = data
        model._check_X(X)
        model._check_y(X, y)
        N = X.shape[0]
        batch_size = N if self.batch_size is None else min(self.batch_size, N)
        params = [p for p in model.parameters() if p.requires_grad]
        seed = base_seed(self.seed)
        with seeded(seed, X):
            gen = torch.Generator().manual_seed(seed)
            batches = (_Reshuffled if batch_size == N else Minibatches)(X, y, batch_size=batch_size, generator=gen)
            model.train()

            def loss(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
                try:
                    value = -model.elbo(*batch, num_data=N, num_samples=self.num_samples) / N
                except ValueError:
                    # A diverged step left non-finite parameters, so K_uu has no factor: that is a
                    # non-finite loss, which the loop reports with its fix (lower lr, clip, float64).
                    if all(bool(torch.isfinite(p).all()) for p in params):
                        raise
                    value = torch.full((), math.nan, dtype=X.dtype, device=X.device)
                return value, {"elbo": -value.detach()}

            result = self._optimize(model, loss, batches=batches, params=params, progress=progress,
                                    desc="fit classifier")
        model.eval()
        return Fit(model, result.history, self._record(result, seed, num_data=N))


def fit_classifier(model: SparseTProcessClassifier, X: Tensor, y: Tensor, num_steps: int = 500,
                   batch_size: int | None = None, lr: float = 0.01, num_samples: int = 8, seed: int = 0,
                   progress: bool = False) -> Fit:
    """Maximise the ELBO with Adam on minibatches: :class:`SparseTProcessTrainer` in one call.

    Args:
        model: the classifier (trained in place, left in eval mode).
        X: ``[N, d]`` inputs; y: ``[N]`` labels.
        num_steps: optimiser steps.
        batch_size: minibatch size (default: the full data).
        lr: Adam's learning rate.
        num_samples: Monte Carlo samples per point in each ELBO estimate.
        seed: seeds minibatch order and the Monte Carlo noise.
        progress: show a tqdm bar.

    Returns:
        The :class:`~inference.training.fit.Fit`: ``fit.history["elbo"]`` ``[num_steps]`` is the
        ELBO per data point at each step (what ``fit_classifier(...)["elbo"]`` was, as a tensor),
        ``fit.history["loss"]`` its negative.
    """
    trainer = SparseTProcessTrainer(num_steps, num_samples=num_samples, lr=lr, batch_size=batch_size, seed=seed)
    return trainer.fit(model, (X, y), progress=progress)
