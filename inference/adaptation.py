"""Warm-up adaptation for HMC, per chain and vectorised over chains: plain functions and
small state tuples (docs/design.md, convention 2).

* Step size: dual averaging towards a target acceptance probability (Nesterov 2009; Hoffman
  & Gelman 2014, arXiv:1111.4246, Sec. 3.2.1), one independent controller per chain, and the
  "reasonable first step size" search of the same paper (Algorithm 4), vectorised.
* Mass matrix: Welford estimates of each chain's own variance (diagonal) or covariance
  (dense) over Stan's expanding windows, shrunk towards a small multiple of the identity as
  Stan does (Stan Reference Manual, "HMC algorithm parameters", warm-up adaptation).
* Trajectory length: ChEES (Hoffman, Radul & Sountsov 2021, AISTATS, "An adaptive-MCMC
  scheme for setting trajectory lengths in Hamiltonian Monte Carlo") -- gradient ascent of
  the change in the estimator of the expected square, with jittered (Halton) trajectory
  lengths. ChEES is a cross-chain criterion: it is the one place where chains share
  information (see :func:`chees_update`).

All tensors carry the chain dimension first: step-size state ``[chains]``, Welford moments
``[chains, D]`` or ``[chains, D, D]``; the ChEES state is scalar (one trajectory length).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from inference.checks import renamed_kwargs
from inference.integrators import GradAndValue, kinetic_energy, leapfrog, mass_matrix_factor, sample_momentum

__all__ = [
    "CheesState",
    "DualAveragingState",
    "WelfordState",
    "chees_gradient",
    "chees_init",
    "chees_raise",
    "chees_restart_average",
    "chees_trajectory_length",
    "chees_update",
    "dual_averaging_init",
    "dual_averaging_step_size",
    "dual_averaging_update",
    "find_reasonable_step_size",
    "halton",
    "mass_matrix_windows",
    "welford_covariance",
    "welford_init",
    "welford_update",
]

# ---------------------------------------------------------------- dual averaging
#: Dual-averaging constants t0 and kappa from Hoffman & Gelman (2014, arXiv:1111.4246), Sec. 3.2.1.
DA_T0 = 10.0
DA_KAPPA = 0.75
#: Their gamma is 0.05, tuned for NUTS, whose acceptance statistic averages a whole tree. The
#: acceptance probability of one jittered static-HMC proposal is much noisier, and the primal
#: iterates wander by about noise/gamma in log step size; acceptance being concave in the
#: step size, the averaged step size then overshoots the target (measured on a 20-D Gaussian,
#: target 0.8, 16 chains, 500 warm-up: 0.89 with gamma = 0.05, 0.84 with 0.1, 0.79 with 0.2,
#: the step size growing by 35%). So we damp the iterates four times more.
DA_GAMMA = 0.2
#: The shrinkage target ``mu = log(10 * step_size)`` of the same section: a bias towards
#: step sizes larger than the start, since the search below finds a conservative one.
DA_MU_FACTOR = 10.0


class DualAveragingState(NamedTuple):
    """Per-chain dual-averaging state; every field is ``[chains]`` except the count ``t``."""

    log_step_size: Tensor
    log_step_size_avg: Tensor
    h_bar: Tensor
    mu: Tensor
    t: int


def dual_averaging_init(step_size: Tensor) -> DualAveragingState:
    """Start a controller per chain at ``step_size`` ``[chains]``."""
    log_eps = step_size.log()
    return DualAveragingState(log_eps, torch.zeros_like(log_eps), torch.zeros_like(log_eps),
                              math.log(DA_MU_FACTOR) + log_eps, 0)


def dual_averaging_update(state: DualAveragingState, accept_prob: Tensor, target_accept: float) -> DualAveragingState:
    """One dual-averaging step from each chain's own acceptance probability ``[chains]``
    (``log eps_t = mu - sqrt(t) / gamma * mean_{s<=t}(target - a_s)``, iterate-averaged with
    weight ``t^-kappa``).

    NaN acceptance probabilities (a non-finite proposal) count as 0, which shrinks the
    step size.
    """
    t = state.t + 1
    a = torch.nan_to_num(accept_prob, nan=0.0)
    eta = 1.0 / (t + DA_T0)
    h_bar = (1.0 - eta) * state.h_bar + eta * (target_accept - a)
    log_eps = state.mu - math.sqrt(t) / DA_GAMMA * h_bar
    w = t ** (-DA_KAPPA)
    log_avg = w * log_eps + (1.0 - w) * state.log_step_size_avg
    return DualAveragingState(log_eps, log_avg, h_bar, state.mu, t)


def dual_averaging_step_size(state: DualAveragingState, final: bool = False) -> Tensor:
    """The step size to use next (``final=False``) or after warm-up (``final=True``, the
    iterate average), ``[chains]``."""
    if final and state.t > 0:
        return state.log_step_size_avg.exp()
    return state.log_step_size.exp()


#: Give up doubling/halving after this many tries (a factor 2^50 from the start).
MAX_STEP_SIZE_SEARCH = 50


@renamed_kwargs(value_and_grad="grad_and_value")
def find_reasonable_step_size(z: Tensor, log_density: Tensor, grad: Tensor, step_size: Tensor,
                              inverse_mass_matrix: Tensor, grad_and_value: GradAndValue,
                              generator: torch.Generator | None = None) -> Tensor:
    """Hoffman & Gelman's Algorithm 4, per chain: double or halve each chain's step size
    until one leapfrog step's acceptance probability crosses 1/2.

    Args:
        z, grad: positions and gradients ``[chains, D]``; ``log_density`` ``[chains]``.
        step_size: starting step sizes ``[chains]``.
        inverse_mass_matrix: ``[chains, D]`` or ``[chains, D, D]``.
        grad_and_value: the batched gradient and log density.
        generator: random stream for the momenta.

    Returns:
        ``[chains]`` step sizes.
    """
    factor = mass_matrix_factor(inverse_mass_matrix)
    log_half = math.log(0.5)
    eps = step_size.clone()
    direction = None
    done = torch.zeros_like(eps, dtype=torch.bool)
    for _ in range(MAX_STEP_SIZE_SEARCH):
        p = sample_momentum(factor, z, generator)
        _, p1, _, lp1 = leapfrog(z, p, grad, eps, inverse_mass_matrix, grad_and_value, 1)
        delta = (log_density - kinetic_energy(p, inverse_mass_matrix)) - (lp1 - kinetic_energy(p1, inverse_mass_matrix))
        log_accept = torch.nan_to_num(-delta, nan=-math.inf)
        if direction is None:
            direction = torch.where(log_accept > log_half, 1.0, -1.0).to(eps)
        done = done | (direction * log_accept <= direction * log_half)
        if bool(done.all()):
            break
        eps = torch.where(done, eps, eps * 2.0**direction)
    return eps


# ------------------------------------------------------------ mass matrix
#: Stan's default windows: a fast initial buffer, slow windows doubling from a base size,
#: and a fast terminal buffer (Stan Reference Manual, "Automatic parameter tuning").
INIT_BUFFER = 75
TERM_BUFFER = 50
BASE_WINDOW = 25
#: Stan shrinks the estimate towards ``1e-3 * I`` with weight ``5 / (n + 5)``.
SHRINK_COUNT = 5.0
SHRINK_TARGET = 1e-3
#: Below this many warm-up iterations there is too little to estimate a metric (Stan).
MIN_WARMUP_FOR_METRIC = 20
#: The step size restarts after the last metric update; a dual-averaging run much shorter
#: than this ends near its shrinkage point log(10 * eps0), about ten times too large. Stan's
#: 10% terminal buffer of a short warm-up (5 iterations of 50) is raised to this.
MIN_TERM_BUFFER = 20


def mass_matrix_windows(num_warmup: int) -> list[tuple[int, int]]:
    """Stan's slow-adaptation windows for ``num_warmup`` iterations.

    Returns:
        ``[(start, end), ...]``: collect draws of iterations ``start <= i < end`` and update
        the mass matrix after iteration ``end - 1``. Empty for very short warm-ups.
    """
    if num_warmup < MIN_WARMUP_FOR_METRIC:
        return []
    init, term, base = INIT_BUFFER, TERM_BUFFER, BASE_WINDOW
    if init + term + base > num_warmup:
        # Stan's fallback proportions: 15% initial, 75% one slow window, 10% terminal (but
        # at least MIN_TERM_BUFFER; no window at all when that leaves too little).
        init = int(0.15 * num_warmup)
        term = max(int(0.1 * num_warmup), MIN_TERM_BUFFER)
        base = num_warmup - init - term
        if base < MIN_WARMUP_FOR_METRIC // 2:
            return []
    windows = []
    start, size = init, base
    end_slow = num_warmup - term
    while start < end_slow:
        end = start + size
        # A window that would leave less than a full next window is stretched to the end.
        if end + 2 * size > end_slow:
            end = end_slow
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


class WelfordState(NamedTuple):
    """Running moments per chain: ``mean`` ``[chains, D]``; ``m2`` ``[chains, D]`` (diagonal)
    or ``[chains, D, D]`` (dense); ``count`` draws so far."""

    count: int
    mean: Tensor
    m2: Tensor


def welford_init(like: Tensor, dense: bool = False) -> WelfordState:
    """Empty moments for draws shaped like ``like`` ``[chains, D]``."""
    m2 = like.new_zeros(like.shape + like.shape[-1:]) if dense else torch.zeros_like(like)
    return WelfordState(0, torch.zeros_like(like), m2)


def welford_update(state: WelfordState, z: Tensor) -> WelfordState:
    """Add one draw per chain, ``z`` ``[chains, D]`` (Welford 1962's stable update)."""
    count = state.count + 1
    delta = z - state.mean
    mean = state.mean + delta / count
    if state.m2.dim() == z.dim() + 1:
        m2 = state.m2 + delta.unsqueeze(-1) * (z - mean).unsqueeze(-2)
    else:
        m2 = state.m2 + delta * (z - mean)
    return WelfordState(count, mean, m2)


def welford_covariance(state: WelfordState, regularize: bool = True) -> Tensor:
    """Each chain's sample variance ``[chains, D]`` or covariance ``[chains, D, D]``.

    With ``regularize``, Stan's shrinkage ``n/(n+5) * S + 1e-3 * 5/(n+5) * I`` keeps the
    estimate positive definite after a few draws.

    Raises:
        ValueError: with fewer than two draws.
    """
    n = state.count
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 draws, got {n}")
    cov = state.m2 / (n - 1)
    if regularize:
        cov = (n / (n + SHRINK_COUNT)) * cov
        shrink = SHRINK_TARGET * SHRINK_COUNT / (n + SHRINK_COUNT)
        if cov.dim() == state.mean.dim() + 1:
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            cov = cov + shrink * eye
        else:
            cov = cov + shrink
    return cov


# ------------------------------------------------------------------ ChEES
#: ChEES constants from Hoffman, Radul & Sountsov (2021) as set in their TFP implementation:
#: learning rate of the log trajectory length, the RMSProp decay of the squared-gradient
#: average, the clip on one update (about log(2)/2), the averaging exponent of the
#: iterate average, and the acceptance weight below which a chain's gradient is dropped.
CHEES_LEARNING_RATE = 0.025
CHEES_SQ_GRAD_RATE = 0.05
CHEES_MAX_LOG_UPDATE = 0.35
CHEES_AVERAGING_EXPONENT = 0.5
CHEES_MIN_ACCEPT = 1e-4
#: Bits of the Halton (base-2 van der Corput) jitter sequence: 1024 distinct lengths.
HALTON_BITS = 10


def halton(i: int) -> float:
    """The ``i``-th point of the base-2 van der Corput sequence in ``(0, 1)`` (``i >= 0``),
    a low-discrepancy jitter: trajectory lengths cover ``(0, T]`` evenly."""
    k = (i % (2**HALTON_BITS - 1)) + 1
    out, f = 0.0, 0.5
    while k:
        out += f * (k & 1)
        k >>= 1
        f *= 0.5
    return out


class CheesState(NamedTuple):
    """ChEES adaptation state (scalars shared by all chains).

    ``log_trajectory_length``: the current iterate; ``sq_grad``: RMSProp average of squared
    gradients; ``log_trajectory_length_avg``: iterate average used after warm-up; ``t``:
    updates so far; ``t_avg``: updates since the average was last restarted.
    """

    log_trajectory_length: float
    sq_grad: float
    log_trajectory_length_avg: float
    t: int
    t_avg: int


def chees_init(trajectory_length: float) -> CheesState:
    """Start the adaptation at ``trajectory_length`` (> 0)."""
    log_t = math.log(trajectory_length)
    return CheesState(log_t, 0.0, log_t, 0, 0)


def chees_trajectory_length(state: CheesState, final: bool = False) -> float:
    """The current (``final=False``) or averaged (``final=True``) trajectory length."""
    return math.exp(state.log_trajectory_length_avg if final and state.t_avg > 0 else state.log_trajectory_length)


def chees_gradient(z_prev: Tensor, z_prop: Tensor, v_prop: Tensor, accept_prob: Tensor, jitter: float,
                   trajectory_length: float) -> Tensor:
    """Acceptance-weighted estimate of ``d ChEES / d log T`` over chains (a 0-d tensor).

    ``ChEES = E[(||z' - E z||^2 - ||z - E z||^2)^2] / 4``, with ``E z`` replaced by the
    mean over chains (of the previous states, and of the proposals weighted by acceptance).
    Its derivative along the proposal's trajectory is
    ``(||z' - m'||^2 - ||z - m||^2) (z' - m') . v'`` with ``v' = M^{-1} p'`` the velocity at
    the end; the jittered length is ``u T``, so ``d/d log T`` multiplies by ``u T``.

    Args:
        z_prev, z_prop, v_prop: ``[chains, D]``: start, proposal and final velocity.
        accept_prob: ``[chains]`` Metropolis acceptance probabilities (NaN for failures).
        jitter: this iteration's ``u`` in ``(0, 1]``.
        trajectory_length: this iteration's un-jittered ``T``.
    """
    a = torch.nan_to_num(accept_prob, nan=0.0)
    ok = torch.isfinite(z_prop).all(-1) & torch.isfinite(v_prop).all(-1) & (a > CHEES_MIN_ACCEPT)
    w = torch.where(ok, a, torch.zeros_like(a))
    z_safe = torch.where(ok.unsqueeze(-1), z_prop, torch.zeros_like(z_prop))
    v_safe = torch.where(ok.unsqueeze(-1), v_prop, torch.zeros_like(v_prop))
    m_prop = (w.unsqueeze(-1) * z_safe).sum(0) / (w.sum() + 1e-20)
    m_prev = z_prev.mean(0)
    c_prop = z_safe - m_prop
    c_prev = z_prev - m_prev
    diff = (c_prop * c_prop).sum(-1) - (c_prev * c_prev).sum(-1)
    g = jitter * trajectory_length * diff * (c_prop * v_safe).sum(-1)
    g = torch.where(ok & torch.isfinite(g), g, torch.zeros_like(g))
    return (w * g).sum() / (w.sum() + 1e-20)


def chees_update(state: CheesState, z_prev: Tensor, z_prop: Tensor, v_prop: Tensor, accept_prob: Tensor,
                 jitter: float, max_trajectory_length: float | None = None) -> CheesState:
    """One ChEES step on ``log T`` (RMSProp-scaled gradient ascent, clipped), and its iterate
    average (weight ``t^-1/2``).

    What is shared across chains: the trajectory length ``T`` (one number) and, to compute
    its gradient, the across-chain mean of the states. Step sizes and mass matrices stay per
    chain. A batch of chains that all failed leaves the state unchanged.

    Args:
        state: the current state.
        z_prev, z_prop, v_prop, accept_prob, jitter: as for :func:`chees_gradient`.
        max_trajectory_length: clip ``T`` to at most this (e.g. ``max_num_steps * step_size``).
    """
    if z_prev.shape[0] < 2:
        raise ValueError(f"ChEES needs at least 2 chains to estimate the mean, got {z_prev.shape[0]}")
    trajectory_length = math.exp(state.log_trajectory_length)
    g = float(chees_gradient(z_prev, z_prop, v_prop, accept_prob, jitter, trajectory_length))
    if not math.isfinite(g):
        return state
    t = state.t + 1
    sq = (1.0 - CHEES_SQ_GRAD_RATE) * state.sq_grad + CHEES_SQ_GRAD_RATE * g * g
    sq_hat = sq / (1.0 - (1.0 - CHEES_SQ_GRAD_RATE) ** t)  # bias correction of a zero start
    step = CHEES_LEARNING_RATE * g / math.sqrt(sq_hat + 1e-20)
    log_t = state.log_trajectory_length + min(max(step, -CHEES_MAX_LOG_UPDATE), CHEES_MAX_LOG_UPDATE)
    if max_trajectory_length is not None:
        log_t = min(log_t, math.log(max_trajectory_length))
    t_avg = state.t_avg + 1
    w = t_avg ** (-CHEES_AVERAGING_EXPONENT)
    log_avg = w * log_t + (1.0 - w) * state.log_trajectory_length_avg
    return CheesState(log_t, sq, log_avg, t, t_avg)


def chees_restart_average(state: CheesState) -> CheesState:
    """Forget the iterate average (after the metric changes, old lengths are stale)."""
    return state._replace(log_trajectory_length_avg=state.log_trajectory_length, t_avg=0)


def chees_raise(state: CheesState, minimum: float) -> CheesState:
    """Raise the current trajectory length to at least ``minimum`` (keeps the gradient scale)."""
    return state._replace(log_trajectory_length=max(state.log_trajectory_length, math.log(minimum)))
