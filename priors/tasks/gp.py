"""Gaussian-process task priors (PFN paper, arXiv:2112.10510, §5.1-5.2 and App. F).

* :class:`GPPrior` — fixed hyperparameters (paper §5.1: RBF, lengthscale 0.6, outputscale 1,
  noise 1e-4, 5 input dimensions).
* :class:`GPHyperPrior` — hyperparameters drawn per dataset: ARD Matérn-5/2 with
  ``lengthscale ~ Gamma(3, 6)`` per dimension, ``outputscale ~ Gamma(2, 0.15)``,
  ``noise ~ Gamma(1e-4, 1)`` (paper §5.2; ``Gamma(concentration, rate)``), floored at
  BoTorch's minimum inferred noise level ``1e-4``.

Inputs are ``x ~ U[0, 1]^d``; targets ``y ~ N(0, K(x, x) + noise I)`` with a zero mean.
:func:`gp_predictive` gives the exact posterior predictive for given hyperparameters,
computed with GPyTorch's kernels (an implementation independent of the sampler's).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from priors.tasks import TaskPrior
from priors.tasks.sampling import gamma, normal, uniform

__all__ = ["KERNELS", "GPHyperPrior", "GPPrior", "gp_predictive", "kernel_matrix"]

KERNELS = ("rbf", "matern52")
# BoTorch's MIN_INFERRED_NOISE_LEVEL: the PFN code's noise constraint (priors/fast_gp_mix.py).
MIN_NOISE = 1e-4
# Jitter ladder for float32 Cholesky failures (relative to the outputscale) before falling back to float64.
_JITTERS = (1e-6, 1e-5, 1e-4)


def kernel_matrix(x1: Tensor, x2: Tensor, lengthscale: Tensor, outputscale: Tensor, kernel: str) -> Tensor:
    """Stationary kernel ``outputscale * k(|x1 - x2| / lengthscale)`` for a batch of datasets.

    Args:
        x1: ``[B, N, d]``; x2: ``[B, M, d]``.
        lengthscale: ``[B, d]`` (ARD) or ``[B, 1]``.
        outputscale: ``[B]``.
        kernel: ``"rbf"`` or ``"matern52"``.

    Returns:
        ``[B, N, M]``.
    """
    ls = lengthscale.unsqueeze(1)
    a, b = x1 / ls, x2 / ls
    sq = ((a * a).sum(-1, keepdim=True) - 2 * a @ b.transpose(-1, -2) + (b * b).sum(-1).unsqueeze(1)).clamp_min(0)
    if kernel == "rbf":
        k = torch.exp(-0.5 * sq)
    elif kernel == "matern52":
        r = math.sqrt(5.0) * torch.sqrt(sq + 1e-30)  # the epsilon keeps sqrt's gradient finite at r = 0
        k = (1.0 + r + r * r / 3.0) * torch.exp(-r)
    else:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return outputscale[:, None, None] * k


def _cholesky(cov: Tensor, outputscale: Tensor) -> Tensor:
    """Batched Cholesky factor, adding jitter (then float64) only for the matrices that fail."""
    chol, info = torch.linalg.cholesky_ex(cov)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    for jitter in _JITTERS:
        bad = info > 0
        if not bool(bad.any()):
            return chol
        fixed, info_bad = torch.linalg.cholesky_ex(cov[bad] + jitter * outputscale[bad, None, None] * eye)
        chol[bad], info[bad] = fixed, info_bad
    bad = info > 0
    if bool(bad.any()):
        chol[bad] = torch.linalg.cholesky(cov[bad].double() + _JITTERS[-1] * outputscale[bad, None, None].double()
                                          * eye.double()).to(cov.dtype)
    return chol


def _draw_gp(x: Tensor, lengthscale: Tensor, outputscale: Tensor, noise: Tensor, kernel: str,
             generator: torch.Generator | None) -> Tensor:
    """``y ~ N(0, K + noise I)`` for each dataset of ``x`` ``[B, S, d]``; returns ``[B, S]``."""
    cov = kernel_matrix(x, x, lengthscale, outputscale, kernel)
    cov = cov + noise[:, None, None] * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    chol = _cholesky(cov, outputscale)
    z = normal(tuple(x.shape[:2]), generator, x)
    return (chol @ z.unsqueeze(-1)).squeeze(-1)


def _check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


def _check_gamma(spec: Any, name: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (concentration, rate) pair, got {spec!r}") from None
    if not (a > 0 and b > 0):
        raise ValueError(f"{name} needs concentration > 0 and rate > 0, got {spec!r}")
    return a, b


class GPPrior(TaskPrior):
    """Zero-mean GP with fixed hyperparameters.

    Args:
        max_features, min_features: see :class:`TaskPrior` (paper §5.1: 5 and 5).
        lengthscale: one lengthscale shared by every input dimension.
        outputscale: kernel variance.
        noise: observation noise variance.
        kernel: ``"rbf"`` (paper) or ``"matern52"``.
    """

    def __init__(self, max_features: int = 5, min_features: int | None = None, lengthscale: float = 0.6,
                 outputscale: float = 1.0, noise: float = 1e-4, kernel: str = "rbf") -> None:
        super().__init__(max_features, min_features)
        for name, value in (("lengthscale", lengthscale), ("outputscale", outputscale), ("noise", noise)):
            if not float(value) > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.lengthscale, self.outputscale, self.noise = float(lengthscale), float(outputscale), float(noise)
        self.kernel = _check_kernel(kernel)

    def settings(self) -> dict[str, Any]:
        return dict(max_features=self.max_features, min_features=self.min_features, lengthscale=self.lengthscale,
                    outputscale=self.outputscale, noise=self.noise, kernel=self.kernel)

    def hyperparameters(self, batch_size: int, num_features: int, generator: torch.Generator | None = None
                        ) -> dict[str, Tensor]:
        """The (fixed) hyperparameters as per-dataset tensors: ``lengthscale`` ``[B, d]``,
        ``outputscale`` ``[B]``, ``noise`` ``[B]``."""
        like = self._anchor
        return {"lengthscale": like.new_full((batch_size, num_features), self.lengthscale),
                "outputscale": like.new_full((batch_size,), self.outputscale),
                "noise": like.new_full((batch_size,), self.noise)}

    def draw(self, batch_size: int, seq_len: int, num_features: int,
             generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        x, y, _ = self.sample_with_hyperparameters(batch_size, seq_len, num_features, generator)
        return x, y

    def sample_with_hyperparameters(self, batch_size: int, seq_len: int, num_features: int,
                                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, dict]:
        """Like :meth:`sample` but also returns the hyperparameters each dataset was drawn with
        (a dict as :meth:`hyperparameters` gives)."""
        if not 1 <= int(num_features) <= self.max_features:
            raise ValueError(f"num_features must be in [1, {self.max_features}], got {num_features}")
        hyper = self.hyperparameters(batch_size, num_features, generator)
        x = uniform((batch_size, seq_len, num_features), generator, self._anchor)
        y = _draw_gp(x, hyper["lengthscale"], hyper["outputscale"], hyper["noise"], self.kernel, generator)
        return x, y, hyper


class GPHyperPrior(GPPrior):
    """Zero-mean GP whose hyperparameters are drawn from hyperpriors, one draw per dataset.

    Defaults are the PFN paper's (§5.2): ARD Matérn-5/2, ``lengthscale ~ Gamma(3, 6)`` per
    input dimension, ``outputscale ~ Gamma(2, 0.15)``, ``noise ~ Gamma(1e-4, 1)``; every
    ``Gamma(concentration, rate)`` is given as a ``(concentration, rate)`` pair.

    Args:
        max_features, min_features: see :class:`TaskPrior`.
        lengthscale_prior, outputscale_prior, noise_prior: Gamma hyperpriors.
        min_noise: floor on the noise variance (BoTorch's ``1e-4``).
        kernel: ``"matern52"`` (paper) or ``"rbf"``.
    """

    def __init__(self, max_features: int = 5, min_features: int | None = 1,
                 lengthscale_prior: tuple[float, float] = (3.0, 6.0),
                 outputscale_prior: tuple[float, float] = (2.0, 0.15),
                 noise_prior: tuple[float, float] = (1e-4, 1.0), min_noise: float = MIN_NOISE,
                 kernel: str = "matern52") -> None:
        TaskPrior.__init__(self, max_features, min_features)
        self.lengthscale_prior = _check_gamma(lengthscale_prior, "lengthscale_prior")
        self.outputscale_prior = _check_gamma(outputscale_prior, "outputscale_prior")
        self.noise_prior = _check_gamma(noise_prior, "noise_prior")
        if not float(min_noise) >= 0:
            raise ValueError(f"min_noise must be >= 0, got {min_noise!r}")
        self.min_noise = float(min_noise)
        self.kernel = _check_kernel(kernel)

    def settings(self) -> dict[str, Any]:
        return dict(max_features=self.max_features, min_features=self.min_features,
                    lengthscale_prior=list(self.lengthscale_prior), outputscale_prior=list(self.outputscale_prior),
                    noise_prior=list(self.noise_prior), min_noise=self.min_noise, kernel=self.kernel)

    def hyperparameters(self, batch_size: int, num_features: int, generator: torch.Generator | None = None
                        ) -> dict[str, Tensor]:
        """Draw per-dataset hyperparameters: ``lengthscale`` ``[B, d]``, ``outputscale`` ``[B]``, ``noise`` ``[B]``."""
        like = self._anchor
        return {"lengthscale": gamma(*self.lengthscale_prior, (batch_size, num_features), generator, like),
                "outputscale": gamma(*self.outputscale_prior, (batch_size,), generator, like),
                "noise": gamma(*self.noise_prior, (batch_size,), generator, like).clamp_min(self.min_noise)}

    def log_prior(self, lengthscale: Tensor, outputscale: Tensor, noise: Tensor) -> Tensor:
        """Log-density of the hyperpriors (noise floor ignored), summed per dataset: ``[B]``."""
        g = torch.distributions.Gamma
        like = lengthscale

        def gam(spec: tuple[float, float]) -> torch.distributions.Gamma:
            return g(torch.tensor(spec[0], dtype=like.dtype, device=like.device),
                     torch.tensor(spec[1], dtype=like.dtype, device=like.device))

        return (gam(self.lengthscale_prior).log_prob(lengthscale).sum(-1)
                + gam(self.outputscale_prior).log_prob(outputscale) + gam(self.noise_prior).log_prob(noise))


def gp_predictive(train_x: Tensor, train_y: Tensor, test_x: Tensor, lengthscale: Tensor, outputscale: Tensor,
                  noise: Tensor, kernel: str = "matern52") -> tuple[Tensor, Tensor]:
    """Exact GP posterior predictive of noisy targets ``y*`` (mean, variance), batched over datasets.

    The kernel is GPyTorch's (``ScaleKernel(MaternKernel(nu=2.5))`` or ``ScaleKernel(RBFKernel())``
    with ARD), so it checks the sampler's own kernel code independently.

    Args:
        train_x: ``[B, n, d]``; train_y: ``[B, n]``; test_x: ``[B, m, d]``.
        lengthscale: ``[B, d]``; outputscale: ``[B]``; noise: ``[B]``.
        kernel: ``"matern52"`` or ``"rbf"``.

    Returns:
        ``(mean, variance)``, each ``[B, m]``.
    """
    import gpytorch

    batch, _, d = train_x.shape
    base = (gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d, batch_shape=torch.Size([batch]))
            if _check_kernel(kernel) == "matern52" else
            gpytorch.kernels.RBFKernel(ard_num_dims=d, batch_shape=torch.Size([batch])))
    k = gpytorch.kernels.ScaleKernel(base, batch_shape=torch.Size([batch])).to(train_x)
    k.base_kernel.lengthscale = lengthscale.unsqueeze(1)
    k.outputscale = outputscale
    with torch.no_grad():
        k_nn = k(train_x).to_dense() + noise[:, None, None] * torch.eye(train_x.shape[1]).to(train_x)
        k_mn = k(test_x, train_x).to_dense()
        k_mm = k(test_x, diag=True)
    chol = torch.linalg.cholesky(k_nn)
    alpha = torch.cholesky_solve(train_y.unsqueeze(-1), chol)
    mean = (k_mn @ alpha).squeeze(-1)
    v = torch.linalg.solve_triangular(chol, k_mn.transpose(-1, -2), upper=False)
    var = (k_mm - (v * v).sum(-2)).clamp_min(0) + noise[:, None]
    return mean, var
