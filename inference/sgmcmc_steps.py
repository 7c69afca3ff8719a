"""Stochastic-gradient MCMC update steps and step-size schedules, as pure functions.

Every step maps a state of ``[chains, D]`` tensors and a stochastic gradient of the log
density to the next state: nothing is modified in place and no random numbers are drawn
here. The caller passes the standard-normal draw ``noise`` (``None`` means no injected
noise), so a step is a deterministic function that the tests can check line by line and
the runner in :mod:`inference.sgmcmc` can vectorise over chains for free.

Conventions (``g`` is the stochastic gradient of the *log density*, i.e. ``-grad U``, with
the minibatch log-likelihood already rescaled by ``N / B``; ``T`` is the temperature, the
stationary law is ``p(theta)^(1/T)``; ``xi`` is standard normal):

* SGLD (Welling & Teh 2011, ICML), in the paper's form::

      theta' = theta + (eps / 2) g + sqrt(eps T) xi

* SGHMC (Chen, Fox & Guestrin 2014, arXiv:1402.4102, Algorithm 2 with unit mass), in its
  continuous-time parameters: step ``eps``, friction ``C``, gradient-noise estimate ``B``::

      r'     = (1 - eps C) r + eps g + sqrt(2 eps (C T - B)) xi
      theta' = theta + eps r'

  This is the paper's "SGD with momentum" form ``v' = (1 - alpha) v + eta g + N(0, 2 (alpha
  - beta) eta)`` with ``v = eps r``, learning rate ``eta = eps^2``, momentum decay ``alpha =
  eps C`` and ``beta = eps B``; at ``T = 0`` (and ``B = 0``) it is exactly
  ``torch.optim.SGD(lr=eps**2, momentum=1 - eps * C)`` on ``-log p``. The `posteriors`
  library's ``sghmc`` uses the same ``(lr=eps, alpha=C)`` parameters.

* Adaptive SGHMC (Springenberg, Klein, Falkner & Hutter 2016, "Bayesian optimization with
  robust Bayesian neural networks", NeurIPS; Eqs. 8-10): during burn-in a per-coordinate
  estimate ``v_hat`` of the squared gradient (with a self-tuned averaging window ``tau``)
  gives the preconditioner ``M^-1 = v_hat^(-1/2)``; with ``mdecay = eps M^-1 C``::

      v'     = v - eps^2 M^-1 grad U - mdecay v + N(0, 2 eps^2 mdecay M^-1 T - eps^4)
      theta' = theta + v'

* Cyclical step sizes (Zhang, Li, Zhang, Chen & Wilson 2020, arXiv:1902.03932, Eq. 1):
  ``eps_k = eps_0 / 2 (cos(pi r_k) + 1)`` with ``r_k = (k mod L) / L`` the position in a cycle
  of ``L`` iterations; the first fraction ``beta`` of each cycle explores (no noise), the
  rest samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from inference.checks import check_choice, check_float, check_int, positive_float

__all__ = [
    "SCHEDULES",
    "AdaptiveSGHMCState",
    "SGHMCState",
    "adaptive_sghmc_init",
    "adaptive_sghmc_step",
    "constant_schedule",
    "cycle_position",
    "cyclical_schedule",
    "make_schedule",
    "polynomial_schedule",
    "sghmc_init",
    "sghmc_step",
    "sgld_step",
]

#: Exponent of the polynomial decay ``eps_k = eps_0 (1 + k / k0)^-gamma``; Welling & Teh
#: (2011) need ``gamma`` in (0.5, 1] for convergence and used 0.55 in their experiments.
POLYNOMIAL_DECAY = 0.55

#: Floor under the squared-gradient estimate in the adaptive preconditioner, as in the
#: reference implementation (pybnn's ``AdaptiveSGHMC``, ``epsilon=1e-16``); it only matters
#: for coordinates whose gradient is exactly zero.
ADAPT_FLOOR = 1e-16


class SGHMCState(NamedTuple):
    """SGHMC state: positions and momenta, both ``[chains, D]``."""

    params: Tensor
    momentum: Tensor


class AdaptiveSGHMCState(NamedTuple):
    """Adaptive SGHMC state, every field ``[chains, D]``.

    Attributes:
        params: positions ``theta``.
        momentum: the velocity ``v`` (already multiplied by the step, as in the paper).
        tau: the self-tuned averaging window of the estimates.
        g: running mean of ``grad U``.
        v_hat: running mean of ``(grad U)^2`` (the preconditioner is ``v_hat^(-1/2)``).
    """

    params: Tensor
    momentum: Tensor
    tau: Tensor
    g: Tensor
    v_hat: Tensor


# ------------------------------------------------------------------------- steps
def sgld_step(params: Tensor, grad: Tensor, step_size: float, temperature: float = 1.0,
              noise: Tensor | None = None) -> Tensor:
    """One SGLD update (Welling & Teh 2011): ``theta + eps/2 g + sqrt(eps T) xi``.

    Args:
        params: ``[chains, D]`` positions.
        grad: ``[chains, D]`` stochastic gradient of the log density at ``params``.
        step_size: ``eps > 0``.
        temperature: ``T >= 0``; the chain targets ``p^(1/T)``.
        noise: ``[chains, D]`` standard-normal draw, or ``None`` for no noise.

    Returns:
        The new positions ``[chains, D]``.
    """
    out = params + (0.5 * step_size) * grad
    if noise is not None and temperature > 0:
        out = out + math.sqrt(step_size * temperature) * noise
    return out


def sghmc_init(params: Tensor) -> SGHMCState:
    """SGHMC state at ``params`` with zero momenta (as SGD with momentum starts)."""
    return SGHMCState(params, torch.zeros_like(params))


def sghmc_step(state: SGHMCState, grad: Tensor, step_size: float, friction: float,
               noise_estimate: float = 0.0, temperature: float = 1.0,
               noise: Tensor | None = None) -> SGHMCState:
    """One SGHMC update (Chen et al. 2014, arXiv:1402.4102, Algorithm 2; unit mass).

    ``r' = (1 - eps C) r + eps g + sqrt(2 eps (C T - B)) xi``, then ``theta' = theta + eps r'``.
    The injected variance is clamped at zero when the gradient-noise estimate ``B`` exceeds
    ``C T`` (the gradient noise alone then already exceeds the target's).

    Args:
        state: current positions and momenta ``[chains, D]``.
        grad: stochastic gradient of the log density at ``state.params``, ``[chains, D]``.
        step_size: ``eps > 0``.
        friction: ``C >= 0`` (momentum decay per step is ``eps C``).
        noise_estimate: ``B >= 0``, the estimated gradient-noise term ``eps V / 2``.
        temperature: ``T >= 0``.
        noise: ``[chains, D]`` standard-normal draw, or ``None`` for no noise.

    Returns:
        The new :class:`SGHMCState`.
    """
    momentum = (1.0 - step_size * friction) * state.momentum + step_size * grad
    var = 2.0 * step_size * (friction * temperature - noise_estimate)
    if noise is not None and var > 0:
        momentum = momentum + math.sqrt(var) * noise
    return SGHMCState(state.params + step_size * momentum, momentum)


def adaptive_sghmc_init(params: Tensor) -> AdaptiveSGHMCState:
    """Adaptive SGHMC state at ``params``: zero velocity, estimates at one (as in the paper's code)."""
    ones = torch.ones_like(params)
    return AdaptiveSGHMCState(params, torch.zeros_like(params), ones, ones, ones)


def adaptive_sghmc_step(state: AdaptiveSGHMCState, grad: Tensor, step_size: float, momentum_decay: float,
                        temperature: float = 1.0, adapt: bool = True,
                        noise: Tensor | None = None) -> AdaptiveSGHMCState:
    """One step of SGHMC with the burn-in preconditioner of Springenberg et al. (2016).

    With ``adapt=True`` (burn-in) the window ``tau`` and the running moments ``g`` and
    ``v_hat`` of ``grad U = -grad`` are updated first (Eqs. 8-9, with weight
    ``1 / (tau + 1)`` from the current ``tau``); the preconditioner ``M^-1 = v_hat^(-1/2)`` then
    scales the step (Eq. 10). After burn-in the estimates are frozen, so the chain is plain
    preconditioned SGHMC and leaves the (tempered) posterior invariant up to ``O(eps)``.

    Args:
        state: the current state (all fields ``[chains, D]``).
        grad: stochastic gradient of the log density at ``state.params``.
        step_size: the paper's ``eps`` (its code's ``lr``), ``> 0``.
        momentum_decay: ``mdecay = eps M^-1 C`` in ``[0, 1]`` (the paper uses 0.05).
        temperature: ``T >= 0``; scales the injected (not the gradient-noise) variance.
        adapt: update the preconditioner (burn-in only).
        noise: ``[chains, D]`` standard-normal draw, or ``None``.

    Returns:
        The new :class:`AdaptiveSGHMCState`.
    """
    grad_u = -grad
    tau, g, v_hat = state.tau, state.g, state.v_hat
    if adapt:
        weight = 1.0 / (tau + 1.0)
        tau = tau + 1.0 - tau * g * g / (v_hat + ADAPT_FLOOR)
        g = g + weight * (grad_u - g)
        v_hat = v_hat + weight * (grad_u * grad_u - v_hat)
    minv = 1.0 / (v_hat.sqrt() + ADAPT_FLOOR)
    eps2 = step_size * step_size
    momentum = state.momentum - eps2 * minv * grad_u - momentum_decay * state.momentum
    if noise is not None and temperature > 0:
        # The -eps^4 term removes the gradient noise's own contribution (eps^4 M^-1 V M^-1
        # with V ~ v_hat); clamped at zero where it would exceed the injected variance.
        var = (2.0 * eps2 * momentum_decay * temperature) * minv - eps2 * eps2
        momentum = momentum + var.clamp(min=0.0).sqrt() * noise
    return AdaptiveSGHMCState(state.params + momentum, momentum, tau, g, v_hat)


# --------------------------------------------------------------------- schedules
Schedule = Callable[[int], float]


def constant_schedule(step_size: float) -> Schedule:
    """``k -> step_size``."""
    return lambda k: step_size


def polynomial_schedule(step_size: float, offset: float, decay: float = POLYNOMIAL_DECAY) -> Schedule:
    """Welling & Teh's decaying step ``eps_k = eps_0 (1 + k / offset)^-decay``.

    Args:
        step_size: ``eps_0``, the first step.
        offset: iterations over which the step falls by ``2^-decay`` (their ``b``), ``> 0``.
        decay: ``gamma`` in (0.5, 1] (convergence needs ``sum eps = inf``, ``sum eps^2 < inf``).
    """
    positive_float(offset, "offset")
    check_float(decay, "decay", 0.5, 1.0, low_open=True)
    return lambda k: step_size * (1.0 + k / offset) ** (-decay)


def cycle_position(k: int, cycle_length: int) -> float:
    """``r_k = (k mod L) / L`` in ``[0, 1)``: where iteration ``k`` (from 0) sits in its cycle."""
    return (k % cycle_length) / cycle_length


def cyclical_schedule(step_size: float, cycle_length: int) -> Schedule:
    """Zhang et al.'s cosine cycles: ``eps_k = eps_0 / 2 (cos(pi r_k) + 1)`` (arXiv:1902.03932, Eq. 1).

    Args:
        step_size: ``eps_0``, the step at the start of every cycle.
        cycle_length: iterations per cycle ``L = ceil(K / M)``.
    """
    check_int(cycle_length, "cycle_length")
    return lambda k: 0.5 * step_size * (math.cos(math.pi * cycle_position(k, cycle_length)) + 1.0)


#: Schedule names :func:`make_schedule` understands.
SCHEDULES = ("constant", "polynomial", "cyclical")


def make_schedule(step_size: float | Schedule, schedule: str = "constant", num_steps: int | None = None,
                  cycle_length: int | None = None) -> Schedule:
    """Turn an engine's ``step_size``/``schedule`` settings into ``k -> eps_k``.

    Args:
        step_size: a positive float (the first/peak step), or a callable ``k -> eps_k``
            (then ``schedule`` must be ``"constant"``: the callable is the schedule).
        schedule: ``"constant"``, ``"polynomial"`` (offset ``num_steps / 10``) or
            ``"cyclical"`` (needs ``cycle_length``).
        num_steps: total iterations (for ``"polynomial"``).
        cycle_length: iterations per cycle (for ``"cyclical"``).

    Raises:
        ValueError: unknown schedule, non-positive step size, missing length.
        TypeError: ``step_size`` is neither a number nor a callable.
    """
    check_choice(schedule, "schedule", SCHEDULES)
    if callable(step_size):
        if schedule != "constant":
            raise ValueError(f"step_size is already a schedule (a callable); leave schedule='constant', "
                             f"got {schedule!r}")
        return step_size
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)):
        raise TypeError(f"step_size must be a positive float or a callable k -> step size, "
                        f"got {type(step_size).__name__}")
    eps = positive_float(step_size, "step_size")
    if schedule == "constant":
        return constant_schedule(eps)
    if schedule == "polynomial":
        if num_steps is None:
            raise ValueError("schedule='polynomial' needs num_steps")
        return polynomial_schedule(eps, offset=max(num_steps / 10.0, 1.0))
    if cycle_length is None:
        raise ValueError("schedule='cyclical' needs cycle_length")
    return cyclical_schedule(eps, cycle_length)
