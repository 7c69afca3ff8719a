"""Hamiltonian dynamics for many chains at once: kinetic energy, momentum draws, leapfrog.

Every function works on a batch of chains, ``z`` and ``p`` of shape ``[chains, D]``, with a
per-chain inverse mass matrix that is either diagonal (``[chains, D]``) or dense
(``[chains, D, D]``) and a per-chain step size (``[chains]``). The Hamiltonian is
``H(z, p) = -log_density(z) + p^T M^{-1} p / 2`` (Neal 2011, "MCMC using Hamiltonian
dynamics", arXiv:1206.1901, Sec. 5.2); the leapfrog integrator is the
velocity-Verlet scheme, time-reversible and volume-preserving, with a global energy
error of order ``step_size^2``.

These are plain functions with no state (docs/design.md, convention 2); the runner in
:mod:`inference.hmc` strings them together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from inference.checks import renamed_attributes, renamed_kwargs

__all__ = [
    "GradAndValue",
    "StepFn",
    "is_dense",
    "kinetic_energy",
    "leapfrog",
    "leapfrog_step",
    "mass_matrix_factor",
    "sample_momentum",
    "velocity",
]

#: ``fn(z [chains, D]) -> (grad [chains, D], log_density [chains])`` -- gradient first, the order
#: of ``torch.func.grad_and_value`` -- e.g. :meth:`inference.density.Potential.bind`.
GradAndValue = Callable[[Tensor], tuple[Tensor, Tensor]]

#: 0.2 renamed ``ValueAndGrad`` (it returns the gradient first); the old name goes in 0.3.
__getattr__ = renamed_attributes(__name__, {"ValueAndGrad": "GradAndValue"})


def is_dense(inverse_mass_matrix: Tensor, p: Tensor) -> bool:
    """Whether ``inverse_mass_matrix`` is dense (``[chains, D, D]``) for momenta ``p`` ``[chains, D]``."""
    return inverse_mass_matrix.dim() == p.dim() + 1


def velocity(p: Tensor, inverse_mass_matrix: Tensor) -> Tensor:
    """``M^{-1} p`` per chain: ``[chains, D]`` (the time derivative of the position)."""
    if is_dense(inverse_mass_matrix, p):
        return (inverse_mass_matrix @ p.unsqueeze(-1)).squeeze(-1)
    return inverse_mass_matrix * p


def kinetic_energy(p: Tensor, inverse_mass_matrix: Tensor) -> Tensor:
    """``p^T M^{-1} p / 2`` per chain: ``[chains]``."""
    return 0.5 * (p * velocity(p, inverse_mass_matrix)).sum(-1)


def mass_matrix_factor(inverse_mass_matrix: Tensor) -> Tensor:
    """What :func:`sample_momentum` needs to draw ``p ~ N(0, M)``.

    Args:
        inverse_mass_matrix: ``[chains, D]`` (diagonal) or ``[chains, D, D]`` (dense, SPD).

    Returns:
        ``1 / sqrt(inverse_mass_matrix)`` ``[chains, D]`` for a diagonal matrix; for a dense
        one the lower Cholesky factor ``L`` of ``M^{-1} = L L^T`` ``[chains, D, D]`` (then
        ``p = L^{-T} e`` with ``e ~ N(0, I)`` has covariance ``L^{-T} L^{-1} = M``).
    """
    if inverse_mass_matrix.dim() >= 3:
        return torch.linalg.cholesky(inverse_mass_matrix)
    return inverse_mass_matrix.rsqrt()


def sample_momentum(factor: Tensor, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``p ~ N(0, M)`` for every chain.

    Args:
        factor: output of :func:`mass_matrix_factor`.
        like: a ``[chains, D]`` tensor giving shape, dtype and device.
        generator: the random stream (default: torch's global one).

    Returns:
        ``p`` of shape ``[chains, D]``.
    """
    e = torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    if factor.dim() == like.dim() + 1:
        lt = factor.transpose(-1, -2)
        return torch.linalg.solve_triangular(lt, e.unsqueeze(-1), upper=True).squeeze(-1)
    return factor * e


@renamed_kwargs(value_and_grad="grad_and_value")
def leapfrog_step(z: Tensor, p: Tensor, grad: Tensor, step_size: Tensor, inverse_mass_matrix: Tensor,
                  grad_and_value: GradAndValue) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One velocity-Verlet step for every chain.

    Args:
        z, p, grad: positions, momenta and log-density gradients ``[chains, D]``.
        step_size: ``[chains, 1]`` (0 leaves a chain where it is).
        inverse_mass_matrix: ``[chains, D]`` or ``[chains, D, D]``.
        grad_and_value: ``fn(z) -> (grad [chains, D], log_density [chains])``.

    Returns:
        ``(z, p, grad, log_density)`` after the step.
    """
    p = p + 0.5 * step_size * grad
    z = z + step_size * velocity(p, inverse_mass_matrix)
    grad, logp = grad_and_value(z)
    p = p + 0.5 * step_size * grad
    return z, p, grad, logp


#: ``step(z, p, grad, step_size [chains, 1], inverse_mass_matrix) -> (z, p, grad, log_density)``.
StepFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]


@renamed_kwargs(value_and_grad="grad_and_value")
def leapfrog(z: Tensor, p: Tensor, grad: Tensor, step_size: Tensor | float, inverse_mass_matrix: Tensor,
             grad_and_value: GradAndValue, num_steps: Tensor | int,
             step_fn: StepFn | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Integrate Hamilton's equations with ``num_steps`` leapfrog steps, each chain its own.

    Chain ``c`` takes ``num_steps[c]`` steps of size ``step_size[c]``; the batch runs
    ``max(num_steps)`` gradient evaluations and chains that are done take steps of size
    zero (they stay put, so one tensor program serves chains of different lengths).

    Args:
        z: positions ``[chains, D]``.
        p: momenta ``[chains, D]``.
        grad: gradient of the log density at ``z``, ``[chains, D]``.
        step_size: ``[chains]`` (or a float).
        inverse_mass_matrix: ``[chains, D]`` or ``[chains, D, D]``.
        grad_and_value: ``fn(z) -> (grad [chains, D], log_density [chains])``.
        num_steps: ``[chains]`` integer tensor, or an int for all chains (>= 1 somewhere).
        step_fn: a (compiled) replacement for :func:`leapfrog_step` with ``grad_and_value``
            bound, or None.

    Returns:
        ``(z, p, grad, log_density)`` at the end of each chain's trajectory; ``log_density``
        is ``[chains]``.
    """
    chains = z.shape[0]
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device).expand(chains)
    if isinstance(num_steps, Tensor):
        steps = num_steps.to(z.device).expand(chains)
        most = int(steps.max())
        # Row k holds each chain's step size for step k: its own, or 0 once it is done.
        ks = torch.arange(most, device=z.device).unsqueeze(-1)
        sizes = torch.where(ks < steps, eps, torch.zeros_like(eps)).unsqueeze(-1)
    else:
        most = int(num_steps)
        sizes = eps.unsqueeze(-1).expand(most, chains, 1) if most > 0 else None
    if most < 1:
        raise ValueError(f"num_steps must be >= 1 for some chain, got {most}")
    logp = z.new_zeros(chains)
    for k in range(most):
        if step_fn is None:
            z, p, grad, logp = leapfrog_step(z, p, grad, sizes[k], inverse_mass_matrix, grad_and_value)
        else:
            z, p, grad, logp = step_fn(z, p, grad, sizes[k], inverse_mass_matrix)
    return z, p, grad, logp
