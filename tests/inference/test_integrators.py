"""Leapfrog integrator: second-order energy error, exact reversibility, momenta and masses."""

from __future__ import annotations

import math

import pytest
import torch

from inference.integrators import (
    kinetic_energy,
    leapfrog,
    mass_matrix_factor,
    sample_momentum,
    velocity,
)


def _quartic(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A non-Gaussian log density ``-sum(z^2/2 + z^4/4)`` (so the check is not special to
    the harmonic oscillator) and its gradient, batched over chains."""
    return -(z + z**3), -(0.5 * z**2 + 0.25 * z**4).sum(-1)


def _energy(z, p, imm):
    _, lp = _quartic(z)
    return kinetic_energy(p, imm) - lp


def _random_spd(chains: int, d: int, **tkwargs) -> torch.Tensor:
    a = torch.randn(chains, d, d, **tkwargs)
    return a @ a.transpose(-1, -2) / d + 0.5 * torch.eye(d, **tkwargs)


@pytest.mark.parametrize("dense", [False, True])
def test_energy_error_is_second_order(tkwargs, dense):
    # Integrate to the same time T with step sizes h, h/2, h/4: the global energy error of a
    # second-order method shrinks four-fold per halving (the O(h^3) remainder is small here).
    chains, d, total_time = 6, 3, 1.0
    z0 = torch.randn(chains, d, **tkwargs)
    p0 = torch.randn(chains, d, **tkwargs)
    imm = _random_spd(chains, d, **tkwargs) if dense else torch.rand(chains, d, **tkwargs) + 0.5
    h0 = _energy(z0, p0, imm)
    errors = []
    for h in (0.1, 0.05, 0.025):
        n = round(total_time / h)
        g0, _ = _quartic(z0)
        z, p, _, _ = leapfrog(z0, p0, g0, torch.full((chains,), h, **tkwargs), imm, _quartic, n)
        errors.append((_energy(z, p, imm) - h0).abs())
    assert bool((errors[0] > 1e-6).all())  # a real error to take ratios of
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    for r in ratios:
        assert bool(((r > 3.5) & (r < 4.5)).all()), ratios


@pytest.mark.parametrize("dense", [False, True])
def test_leapfrog_is_exactly_reversible(tkwargs, dense):
    # Forward, flip the momentum, the same steps back, flip again: the start, to round-off.
    chains, d = 5, 4
    z0 = torch.randn(chains, d, **tkwargs)
    p0 = torch.randn(chains, d, **tkwargs)
    imm = _random_spd(chains, d, **tkwargs) if dense else torch.rand(chains, d, **tkwargs) + 0.5
    eps = torch.rand(chains, **tkwargs) * 0.2 + 0.05
    steps = torch.tensor([1, 7, 20, 3, 12], device=tkwargs["device"])  # each chain its own length
    g0, _ = _quartic(z0)
    z1, p1, g1, _ = leapfrog(z0, p0, g0, eps, imm, _quartic, steps)
    assert not torch.allclose(z1, z0)
    z2, p2, _, lp2 = leapfrog(z1, -p1, g1, eps, imm, _quartic, steps)
    torch.testing.assert_close(z2, z0, atol=1e-12, rtol=0)
    torch.testing.assert_close(-p2, p0, atol=1e-12, rtol=0)
    torch.testing.assert_close(lp2, _quartic(z0)[1], atol=1e-12, rtol=0)


def test_chains_that_are_done_stay_put(tkwargs):
    z0 = torch.randn(3, 2, **tkwargs)
    p0 = torch.randn(3, 2, **tkwargs)
    imm = torch.ones(3, 2, **tkwargs)
    eps = torch.full((3,), 0.1, **tkwargs)
    g0, _ = _quartic(z0)
    z_all, p_all, _, _ = leapfrog(z0, p0, g0, eps, imm, _quartic, torch.tensor([0, 2, 5], device=z0.device))
    torch.testing.assert_close(z_all[0], z0[0])  # zero steps: unchanged
    for c, n in ((1, 2), (2, 5)):
        zc, pc, _, _ = leapfrog(z0[c:c + 1], p0[c:c + 1], g0[c:c + 1], eps[c:c + 1], imm[c:c + 1], _quartic, n)
        torch.testing.assert_close(z_all[c], zc[0])
        torch.testing.assert_close(p_all[c], pc[0])
    with pytest.raises(ValueError, match="num_steps"):
        leapfrog(z0, p0, g0, eps, imm, _quartic, 0)


def test_momentum_has_the_mass_matrix_as_covariance(tkwargs):
    # p = L^{-T} e with M^{-1} = L L^T gives p^T M^{-1} p = e^T e exactly, i.e. Cov(p) = M.
    chains, d = 4, 5
    imm = _random_spd(chains, d, **tkwargs)
    factor = mass_matrix_factor(imm)
    gen = torch.Generator(device=tkwargs["device"]).manual_seed(0)
    p = sample_momentum(factor, torch.zeros(chains, d, **tkwargs), gen)
    e = torch.randn(chains, d, **tkwargs, generator=torch.Generator(device=tkwargs["device"]).manual_seed(0))
    torch.testing.assert_close(2 * kinetic_energy(p, imm), (e * e).sum(-1))
    # Diagonal: p = e / sqrt(m_inv).
    diag = torch.rand(chains, d, **tkwargs) + 0.1
    p = sample_momentum(mass_matrix_factor(diag), diag, torch.Generator(device=tkwargs["device"]).manual_seed(0))
    torch.testing.assert_close(p, e / diag.sqrt())


def test_dense_and_diagonal_agree_on_a_diagonal_matrix(tkwargs):
    diag = torch.rand(3, 4, **tkwargs) + 0.1
    p = torch.randn(3, 4, **tkwargs)
    dense = torch.diag_embed(diag)
    torch.testing.assert_close(velocity(p, dense), velocity(p, diag))
    torch.testing.assert_close(kinetic_energy(p, dense), kinetic_energy(p, diag))
    assert math.isclose(float(kinetic_energy(p[:1], torch.ones(1, 4, **tkwargs))), 0.5 * float((p[0] ** 2).sum()))
