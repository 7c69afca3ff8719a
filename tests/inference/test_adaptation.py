"""Warm-up adaptation: dual averaging, step-size search, Welford windows, ChEES, Halton jitter."""

from __future__ import annotations

import math

import pytest
import torch
from scenarios import z_critical

from inference.adaptation import (
    DA_GAMMA,
    chees_gradient,
    chees_init,
    chees_trajectory_length,
    chees_update,
    dual_averaging_init,
    dual_averaging_step_size,
    dual_averaging_update,
    find_reasonable_step_size,
    halton,
    mass_matrix_windows,
    welford_covariance,
    welford_init,
    welford_update,
)


def test_dual_averaging_finds_each_chains_own_step_size(tkwargs):
    # A toy acceptance curve a_c(eps) = exp(-eps / s_c), scales four decades apart, each chain
    # starting 10x above its answer. The controllers are independent and the problem is
    # scale-equivariant, so eps_c / s_c must agree across chains to round-off; and the
    # acceptance must approach the target, within the dual-averaging shrinkage bias
    # gamma * (mu - log eps*) / sqrt(t) towards mu = log(10 eps_0) (here log 100).
    scales = torch.tensor([0.01, 1.0, 30.0], **tkwargs)
    answer = -scales * math.log(0.8)
    state = dual_averaging_init(10 * answer)
    accept = {}
    for t in range(1, 1001):
        eps = dual_averaging_step_size(state)
        state = dual_averaging_update(state, torch.exp(-eps / scales), 0.8)
        if t in (100, 1000):
            accept[t] = torch.exp(-dual_averaging_step_size(state, final=True) / scales)
    final = dual_averaging_step_size(state, final=True)
    torch.testing.assert_close(final / scales, (final / scales)[:1].expand(3), rtol=1e-12, atol=0)
    for t, a in accept.items():
        bound = DA_GAMMA * math.log(100.0) / math.sqrt(t)
        assert bool(((a - 0.8).abs() < bound).all()), (t, a, bound)
    assert bool(((accept[1000] - 0.8).abs() < (accept[100] - 0.8).abs()).all())
    # NaN acceptance (a failed proposal) counts as 0 and shrinks the step.
    s2 = dual_averaging_update(state, torch.full((3,), math.nan, **tkwargs), 0.8)
    assert bool((dual_averaging_step_size(s2) < dual_averaging_step_size(state)).all())


def test_step_size_search_scales_with_each_chain(tkwargs):
    # Chain c targets N(0, s_c^2 I). In the coordinates w = z / s_c, with step eta = eps / s_c,
    # a unit-metric leapfrog step is the same for every s_c, so the search (started at
    # eps = s_c) must return s_c times the unit-scale answer, chain by chain.
    w = torch.randn(3, 5, **tkwargs, generator=torch.Generator(tkwargs["device"]).manual_seed(1))

    def search(scales):
        s = scales.unsqueeze(-1)

        def grad_and_value(z):
            return -z / s**2, -0.5 * (z**2 / s**2).sum(-1)

        z = w * s
        grad, lp = grad_and_value(z)
        gen = torch.Generator(device=tkwargs["device"]).manual_seed(0)
        return find_reasonable_step_size(z, lp, grad, scales.clone(), torch.ones(3, 5, **tkwargs),
                                         grad_and_value, gen)

    scales = torch.tensor([2.0**-10, 1.0, 2.0**10], **tkwargs)
    unit = search(torch.ones(3, **tkwargs))
    torch.testing.assert_close(search(scales) / scales, unit, rtol=1e-10, atol=0)
    assert bool(((unit > 0.1) & (unit < 10)).all())  # of order 1 for a standard normal


def test_stan_windows():
    # Stan's schedule for 1000 warm-up iterations: 75 fast, slow windows 25, 50, 100, 200, 500, 50 fast.
    assert mass_matrix_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert mass_matrix_windows(10) == []
    # Short warm-ups: Stan's 15% / 75% / 10% split, with a terminal buffer of at least 20
    # iterations so that the restarted step-size adaptation can settle.
    assert mass_matrix_windows(100) == [(15, 80)]
    assert mass_matrix_windows(30) == []
    for n in (40, 57, 150, 333, 5000):
        w = mass_matrix_windows(n)
        assert all(a < b for a, b in w) and all(w[i][1] == w[i + 1][0] for i in range(len(w) - 1))
        assert n - w[-1][1] >= 20


@pytest.mark.parametrize("dense", [False, True])
def test_welford_matches_batch_moments(tkwargs, dense):
    draws = torch.randn(40, 3, 4, **tkwargs) * torch.tensor([1.0, 10.0, 0.1, 3.0], **tkwargs)
    state = welford_init(draws[0], dense)
    for z in draws:
        state = welford_update(state, z)
    torch.testing.assert_close(state.mean, draws.mean(0))
    raw = welford_covariance(state, regularize=False)
    centred = draws - draws.mean(0)
    if dense:
        torch.testing.assert_close(raw, torch.einsum("nci,ncj->cij", centred, centred) / 39)
    else:
        torch.testing.assert_close(raw, draws.var(0))
    reg = welford_covariance(state)
    n = 40
    shrink = 1e-3 * 5 / (n + 5)
    expected = n / (n + 5) * raw + (shrink * torch.eye(4, **tkwargs) if dense else shrink)
    torch.testing.assert_close(reg, expected)
    with pytest.raises(ValueError, match="2 draws"):
        welford_covariance(welford_update(welford_init(draws[0], dense), draws[0]))


def test_halton_jitter_is_even_and_in_the_unit_interval():
    u = [halton(i) for i in range(1023)]
    assert u[:4] == [0.5, 0.25, 0.75, 0.125]
    assert len(set(u)) == 1023 and min(u) > 0 and max(u) < 1
    assert abs(sum(u) / len(u) - 0.5) < 1e-3  # low discrepancy: the mean is right almost at once
    assert halton(10**6) > 0  # the sequence wraps and never gives a zero-length trajectory


def _oscillator(t: float, chains: int, d: int, seed: int, **tkwargs):
    """Exact Hamiltonian flow for N(0, I) (identity metric): positions and velocities at time t."""
    g = torch.Generator(device=tkwargs["device"]).manual_seed(seed)
    z0 = torch.randn(chains, d, **tkwargs, generator=g)
    p0 = torch.randn(chains, d, **tkwargs, generator=g)
    zt = z0 * math.cos(t) + p0 * math.sin(t)
    vt = -z0 * math.sin(t) + p0 * math.cos(t)
    return z0, zt, vt


@pytest.mark.parametrize("t", [0.4, 1.2, 2.3])
def test_chees_gradient_is_unbiased_on_the_oscillator(tkwargs, t):
    # For N(0, I_d) and exact dynamics, ChEES(t) = d (1 - cos 2t) / 2, so
    # d ChEES / d log t = t d sin(2t): positive below pi/2, negative above. The estimate
    # averages 64 independent batches of 64 chains; comparing their mean with the truth by a
    # z-test at rate 1e-3 for each of the 3 values of t (3e-3 overall; batch means of 64
    # chains are close to normal, and centring on a batch mean biases by O(1/64) of the
    # value, well inside the band).
    d, batches, per = 4, 64, 64
    z0, zt, vt = _oscillator(t, batches * per, d, seed=0, **tkwargs)
    ones = torch.ones(per, **tkwargs)
    est = torch.stack([chees_gradient(z0[b * per:(b + 1) * per], zt[b * per:(b + 1) * per],
                                      vt[b * per:(b + 1) * per], ones, 1.0, t) for b in range(batches)])
    truth = t * d * math.sin(2 * t)
    se = float(est.std() / math.sqrt(batches))
    zc = z_critical(1, 1e-3)
    assert abs(float(est.mean()) - truth) < zc * se + abs(truth) / per, (float(est.mean()), truth, se)
    assert math.copysign(1, float(est.mean())) == math.copysign(1, truth)


def test_chees_moves_the_trajectory_length_uphill(tkwargs):
    # Many ChEES updates on exact oscillator dynamics, with Halton-jittered lengths u*T:
    # E_u ChEES(u T) = d/2 (1 - sin(2T)/(2T)) has its first maximum at T = 4.4934/2 = 2.25
    # (the first minimum of sin(x)/x; the next local minimum of ChEES is at T = 3.86), and
    # the iterate average must settle near it from either side.
    d, chains = 4, 128
    for start in (0.2, 3.5):
        state = chees_init(start)
        for i in range(600):
            u = halton(i)
            t_len = chees_trajectory_length(state)
            z0, zt, vt = _oscillator(u * t_len, chains, d, seed=i, **tkwargs)
            state = chees_update(state, z0, zt, vt, torch.ones(chains, **tkwargs), u)
        final = chees_trajectory_length(state, final=True)
        assert 1.6 < final < 3.2, (start, final)


def test_chees_ignores_failed_chains_and_needs_two(tkwargs):
    z0, zt, vt = _oscillator(0.5, 8, 3, seed=1, **tkwargs)
    accept = torch.ones(8, **tkwargs)
    base = chees_gradient(z0, zt, vt, accept, 1.0, 0.5)
    # A NaN proposal (NaN acceptance) counts exactly as a rejected one with acceptance 0:
    # weight 0 in the gradient and in the proposals' mean, whatever its values.
    zt_nan, a_nan = zt.clone(), accept.clone()
    zt_nan[0], a_nan[0] = math.nan, math.nan
    zt_far, a_zero = zt.clone(), accept.clone()
    zt_far[0], a_zero[0] = 1e6, 0.0
    got = chees_gradient(z0, zt_nan, vt, a_nan, 1.0, 0.5)
    assert torch.isfinite(got) and not torch.isclose(got, base)
    torch.testing.assert_close(got, chees_gradient(z0, zt_far, vt, a_zero, 1.0, 0.5))
    with pytest.raises(ValueError, match="2 chains"):
        chees_update(chees_init(1.0), z0[:1], zt[:1], vt[:1], accept[:1], 1.0)
