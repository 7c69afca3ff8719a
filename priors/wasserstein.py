"""Wasserstein distances between two sets of function draws, for functional prior matching.

Each estimator compares draws ``p`` ``[n, M]`` (functions of a BNN evaluated at ``M``
measurement points, differentiable in the prior's hyperparameters) with a target ``q``
(draws ``[n, M]`` of a GP, or its exact moments):

* :func:`critic_wasserstein` -- the paper's estimate of ``W1`` through the
  Kantorovich-Rubinstein dual, ``sup_{Lip(phi) <= 1} E_p phi - E_q phi``, with ``phi`` a small
  MLP kept near 1-Lipschitz by a gradient penalty (Gulrajani et al. 2017, arXiv:1704.00028),
  trained by an inner loop (Tran et al. 2022, arXiv:2011.12829, Sec. 3).
* :func:`moment_matched_w2` -- the closed-form ``W2`` between Gaussians with the two sides'
  first two moments (the cheap estimator of Sendera et al. 2024, arXiv:2410.15777). It is the
  exact ``W2`` when both sides are Gaussian and a lower bound on the ``W2`` of any two
  distributions with these moments (Gelbrich 1990).
* :func:`sliced_wasserstein` -- the sliced ``W2`` (Rabin et al. 2011; Bonneel et al. 2015):
  the 1-D ``W2`` of random projections, averaged over directions. For an isotropic shift or
  scaling of a Gaussian it equals ``W2 / sqrt(M)``.

:func:`gaussian_w2` is the reference closed form for two Gaussians given by their moments.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "CRITIC_HIDDEN",
    "GRADIENT_PENALTY",
    "LipschitzCritic",
    "critic_wasserstein",
    "gaussian_w2",
    "moment_matched_w2",
    "sliced_wasserstein",
    "sqrtm_psd",
]

#: Hidden width of the critic, as in the paper's code (``LipschitzFunction``: M -> 200 -> 200 -> 1).
CRITIC_HIDDEN = 200

#: Gradient-penalty coefficient of WGAN-GP (Gulrajani et al. 2017), also the paper's.
GRADIENT_PENALTY = 10.0


def _check_draws(p: Tensor, q: Tensor, same_size: bool = False) -> None:
    for name, t in (("p", p), ("q", q)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be function draws of shape [n, M], got {got}")
        if t.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 draws, got {t.shape[0]}")
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"p and q must be evaluated at the same M points: p is {tuple(p.shape)}, "
                         f"q is {tuple(q.shape)}")
    if same_size and p.shape[0] != q.shape[0]:
        raise ValueError(f"p and q must hold the same number of draws, got {p.shape[0]} and {q.shape[0]}")


# ============================================================== closed forms
def sqrtm_psd(cov: Tensor) -> Tensor:
    """Symmetric square root of a PSD matrix ``[..., M, M]`` (negative round-off eigenvalues -> 0)."""
    evals, evecs = torch.linalg.eigh(cov)
    return (evecs * evals.clamp(min=0.0).sqrt().unsqueeze(-2)) @ evecs.transpose(-1, -2)


def gaussian_w2(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    """Closed-form 2-Wasserstein distance between ``N(mean1, cov1)`` and ``N(mean2, cov2)``.

    ``W2^2 = |m1 - m2|^2 + tr C1 + tr C2 - 2 tr (C2^1/2 C1 C2^1/2)^1/2`` (Dowson & Landau 1982).

    Args:
        mean1, mean2: means ``[M]``.
        cov1, cov2: covariances ``[M, M]`` (PSD).

    Returns:
        ``W2`` (not squared), a scalar.
    """
    s2 = sqrtm_psd(cov2)
    cross = torch.linalg.eigvalsh(s2 @ cov1 @ s2).clamp(min=0.0).sqrt().sum()
    w2sq = (mean1 - mean2).square().sum() + cov1.diagonal().sum() + cov2.diagonal().sum() - 2 * cross
    return w2sq.clamp(min=0.0).sqrt()


def moment_matched_w2(p: Tensor, mean: Tensor, cov: Tensor, cov_sqrt: Tensor | None = None) -> Tensor:
    """``W2`` between Gaussians moment-matched to draws ``p`` and to a target ``(mean, cov)``.

    The cross term uses ``tr (S C_p S)^1/2 = ||A S||_* / sqrt(n - 1)`` with ``A`` the centred
    draws and ``S = cov^1/2``: a nuclear norm, whose gradient ``U V^T`` stays bounded when the
    sample covariance is rank deficient (``n <= M``), unlike the eigenvalue square roots.

    Args:
        p: draws ``[n, M]`` (may carry gradients).
        mean: target mean ``[M]``.
        cov: target covariance ``[M, M]``.
        cov_sqrt: ``cov^1/2`` if already known (saves an eigendecomposition per call).

    Returns:
        The estimate (not squared), a scalar differentiable in ``p``.
    """
    if p.dim() != 2 or p.shape[0] < 2:
        raise ValueError(f"p must be at least two function draws [n, M], got {tuple(p.shape)}")
    m = p.shape[1]
    if mean.shape != (m,) or cov.shape != (m, m):
        raise ValueError(f"mean and cov must be [{m}] and [{m}, {m}] for p of shape {tuple(p.shape)}, got "
                         f"{tuple(mean.shape)} and {tuple(cov.shape)}")
    s = sqrtm_psd(cov) if cov_sqrt is None else cov_sqrt
    n = p.shape[0]
    mu = p.mean(0)
    centred = p - mu
    trace_p = centred.square().sum() / (n - 1)
    cross = torch.linalg.svdvals(centred @ s).sum() / math.sqrt(n - 1)
    w2sq = (mu - mean).square().sum() + trace_p + cov.diagonal().sum() - 2 * cross
    # clamp_min(tiny) rather than 0: keeps sqrt's gradient finite when the two coincide.
    return w2sq.clamp(min=torch.finfo(p.dtype).tiny).sqrt()


# ================================================================== sliced
def sliced_wasserstein(p: Tensor, q: Tensor, num_projections: int = 256) -> Tensor:
    """Sliced 2-Wasserstein distance between two equal-size sets of draws.

    ``SW2^2 = E_theta W2^2(theta^T p, theta^T q)`` over directions ``theta`` uniform on the
    sphere; each 1-D ``W2`` is the mean squared gap between the sorted projections.
    Directions are drawn from torch's global generator.

    Args:
        p: draws ``[n, M]`` (may carry gradients).
        q: draws ``[n, M]``.
        num_projections: random directions (Monte Carlo error ~ ``1/sqrt(num_projections)``).

    Returns:
        ``SW2`` (not squared), a scalar differentiable in ``p`` and ``q``.
    """
    _check_draws(p, q, same_size=True)
    if int(num_projections) < 1:
        raise ValueError(f"num_projections must be >= 1, got {num_projections}")
    theta = torch.randn(p.shape[1], int(num_projections), dtype=p.dtype, device=p.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pp = (p @ theta).sort(dim=0).values
    qq = (q.to(p) @ theta).sort(dim=0).values
    return (pp - qq).square().mean().clamp(min=torch.finfo(p.dtype).tiny).sqrt()


# ================================================================== critic
class LipschitzCritic(nn.Module):
    """The critic ``phi``: an MLP ``M -> 200 -> 200 -> 1`` with Softplus, as in the paper's code.

    Args:
        dim: the number of measurement points ``M`` (the critic's input size).
        hidden: hidden width.
    """

    def __init__(self, dim: int, hidden: int = CRITIC_HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(),
                                 nn.Linear(hidden, 1))
        self.reset()

    def reset(self) -> None:
        """Re-initialise (Xavier-normal weights, N(0, 1) biases, as the paper does every outer step)."""
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.normal_(m.bias)

    def forward(self, f: Tensor) -> Tensor:
        """``phi(f)`` for draws ``[n, M]`` -> ``[n]``."""
        return self.net(f).squeeze(-1)


def _gradient_penalty(critic: LipschitzCritic, p: Tensor, q: Tensor) -> Tensor:
    """WGAN-GP penalty ``E (|grad phi(x)| - 1)^2`` on random interpolates of ``p`` and ``q`` rows."""
    n = min(p.shape[0], q.shape[0])
    t = torch.rand(n, 1, dtype=p.dtype, device=p.device)
    x = (t * p[:n] + (1 - t) * q[:n]).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return (grad.norm(dim=1) - 1).square().mean()


def critic_wasserstein(p: Tensor, q: Tensor, critic: LipschitzCritic | None = None,
                       train: tuple[Tensor, Tensor] | None = None, steps: int = 200, lr: float = 0.02,
                       penalty: float = GRADIENT_PENALTY, threshold: float | None = 0.1) -> Tensor:
    """The paper's ``W1`` estimate: train a Lipschitz critic, then ``mean phi(p) - mean phi(q)``.

    The critic is re-initialised and trained by Adagrad for up to ``steps`` steps on
    ``-(E phi(p) - E phi(q)) + penalty * GP`` with detached draws (``train``, by default
    ``p`` and ``q`` themselves; the paper trains on an independent batch so the estimate is
    not inflated by over-fitting). Training stops early once the norm of the critic's
    parameter gradient falls below ``threshold``.

    Args:
        p: draws ``[n, M]`` (may carry gradients; the returned value is differentiable in them).
        q: draws ``[m, M]``.
        critic: a :class:`LipschitzCritic` to reuse (its weights are reset); default a new one.
        train: draws ``(p', q')`` to train the critic on (default ``(p, q)``).
        steps: maximum inner steps (paper: 200 for UCI, 1000 for 1-D).
        lr: Adagrad learning rate (paper: 0.02 for UCI, 0.08 for 1-D).
        penalty: gradient-penalty coefficient.
        threshold: early-stopping level of the critic-gradient norm (paper: 0.1), ``None``: never.

    Returns:
        The ``W1`` estimate, a scalar.
    """
    _check_draws(p, q)
    p_train, q_train = (p, q) if train is None else train
    _check_draws(p_train, q_train)
    p_train = p_train.detach()
    q_train = q_train.detach().to(p_train)
    critic = (LipschitzCritic(p.shape[1]) if critic is None else critic).to(p_train)
    critic.reset()
    critic.requires_grad_(True)
    opt = torch.optim.Adagrad(critic.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(int(steps)):
            opt.zero_grad()
            loss = critic(q_train).mean() - critic(p_train).mean()
            if penalty > 0:
                loss = loss + penalty * _gradient_penalty(critic, p_train, q_train)
            loss.backward()
            if threshold is not None:
                norm = torch.cat([w.grad.flatten() for w in critic.parameters()]).norm()
                if float(norm) < threshold:
                    break
            opt.step()
    # The critic is now fixed: only p (the prior's side) receives gradients.
    critic.requires_grad_(False)
    return critic(p).mean() - critic(q.to(p)).mean()
