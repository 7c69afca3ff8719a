"""The pure SG-MCMC update steps and step-size schedules: formulas, the SGD-momentum limit,
the adaptive preconditioner, schedule shapes and bad settings. All deterministic."""

from __future__ import annotations

import math

import pytest
import torch

from inference.sgmcmc_steps import (
    adaptive_sghmc_init,
    adaptive_sghmc_step,
    cycle_position,
    cyclical_schedule,
    make_schedule,
    polynomial_schedule,
    sghmc_init,
    sghmc_step,
    sgld_step,
)


def test_sgld_step_is_welling_teh_update(tkwargs):
    theta = torch.randn(3, 4, **tkwargs)
    grad = torch.randn(3, 4, **tkwargs)
    xi = torch.randn(3, 4, **tkwargs)
    out = sgld_step(theta, grad, 0.01, temperature=2.0, noise=xi)
    torch.testing.assert_close(out, theta + 0.005 * grad + math.sqrt(0.02) * xi, rtol=0, atol=1e-15)
    # No noise, or zero temperature: plain gradient ascent with rate eps / 2.
    torch.testing.assert_close(sgld_step(theta, grad, 0.01), theta + 0.005 * grad, rtol=0, atol=1e-15)
    torch.testing.assert_close(sgld_step(theta, grad, 0.01, 0.0, xi), theta + 0.005 * grad, rtol=0, atol=1e-15)
    assert not out.requires_grad and out is not theta


def test_sghmc_step_injects_the_stated_variance(tkwargs):
    state = sghmc_init(torch.randn(2, 5, **tkwargs))
    assert torch.equal(state.momentum, torch.zeros_like(state.params))
    xi = torch.randn(2, 5, **tkwargs)
    grad = torch.zeros(2, 5, **tkwargs)
    new = sghmc_step(state, grad, step_size=0.1, friction=3.0, noise_estimate=0.5, temperature=2.0, noise=xi)
    r = math.sqrt(2 * 0.1 * (3.0 * 2.0 - 0.5)) * xi
    torch.testing.assert_close(new.momentum, r, rtol=0, atol=1e-15)
    torch.testing.assert_close(new.params, state.params + 0.1 * r, rtol=0, atol=1e-15)
    # A noise estimate above C T leaves no room for injected noise: clamped, never NaN.
    quiet = sghmc_step(state, grad, 0.1, friction=1.0, noise_estimate=2.0, temperature=1.0, noise=xi)
    assert torch.equal(quiet.momentum, torch.zeros_like(xi))


def test_sghmc_without_noise_is_torch_sgd_with_momentum(tkwargs):
    # log p = -1/2 theta' A theta + b' theta; SGHMC(eps, C) at T=0 must equal
    # SGD(lr=eps^2, momentum=1 - eps C) on -log p, iterate by iterate (up to float64 rounding).
    a = torch.randn(4, 4, **tkwargs)
    a = a @ a.T + 4 * torch.eye(4, **tkwargs)
    b = torch.randn(4, **tkwargs)
    eps, friction = 0.05, 4.0
    theta0 = torch.randn(4, **tkwargs)
    state = sghmc_init(theta0.unsqueeze(0))
    p = theta0.clone().requires_grad_(True)
    opt = torch.optim.SGD([p], lr=eps**2, momentum=1 - eps * friction)
    for _ in range(60):
        grad = -(state.params @ a) + b
        state = sghmc_step(state, grad, eps, friction, temperature=0.0, noise=torch.randn_like(grad))
        opt.zero_grad()
        loss = 0.5 * p @ a @ p - b @ p
        loss.backward()
        opt.step()
        torch.testing.assert_close(state.params[0], p.detach(), rtol=1e-12, atol=1e-14)


def test_adaptive_preconditioner_makes_steps_scale_free(tkwargs):
    # After burn-in on a constant gradient G, v_hat -> G^2 and the preconditioned drift
    # eps^2 G / sqrt(v_hat) -> eps^2 sign(G): the same update for G and 1000 G.
    theta = torch.zeros(1, 3, **tkwargs)
    g = torch.tensor([[0.5, -2.0, 7.0]], **tkwargs)
    states = []
    for scale in (1.0, 1000.0):
        s = adaptive_sghmc_init(theta)
        for _ in range(400):
            s = adaptive_sghmc_step(s, scale * g, step_size=0.1, momentum_decay=1.0, temperature=0.0)
        torch.testing.assert_close(s.v_hat, (scale * g) ** 2, rtol=1e-6, atol=0)
        torch.testing.assert_close(s.g, -scale * g, rtol=1e-6, atol=0)
        states.append(s)
    # momentum_decay=1 forgets the velocity: each step moves by eps^2 M^-1 g exactly.
    step = [adaptive_sghmc_step(s, sc * g, 0.1, 1.0, temperature=0.0, adapt=False)
            for s, sc in zip(states, (1.0, 1000.0))]
    for s, new in zip(states, step):
        torch.testing.assert_close(new.params - s.params, 0.01 * g.sign(), rtol=1e-6, atol=0)
    # adapt=False freezes the estimates.
    assert torch.equal(step[0].v_hat, states[0].v_hat) and torch.equal(step[0].tau, states[0].tau)


def test_adaptive_step_noise_variance(tkwargs):
    s = adaptive_sghmc_init(torch.zeros(1, 2, **tkwargs))
    s = s._replace(v_hat=torch.tensor([[4.0, 0.25]], **tkwargs))
    xi = torch.ones(1, 2, **tkwargs)
    new = adaptive_sghmc_step(s, torch.zeros(1, 2, **tkwargs), step_size=0.1, momentum_decay=0.05,
                              temperature=1.0, adapt=False, noise=xi)
    minv = torch.tensor([[0.5, 2.0]], **tkwargs)
    var = 2 * 0.01 * 0.05 * minv - 1e-4  # 2 eps^2 mdecay M^-1 - eps^4
    torch.testing.assert_close(new.momentum, var.sqrt(), rtol=1e-12, atol=0)
    # Zero temperature: no injected noise at all.
    cold = adaptive_sghmc_step(s, torch.zeros(1, 2, **tkwargs), 0.1, 0.05, temperature=0.0, adapt=False, noise=xi)
    assert torch.equal(cold.momentum, torch.zeros_like(xi))


def test_cyclical_schedule_shape():
    sched = cyclical_schedule(0.4, cycle_length=10)
    assert sched(0) == pytest.approx(0.4)
    assert sched(5) == pytest.approx(0.2)  # half-way: cos(pi/2) = 0
    assert sched(10) == pytest.approx(0.4)  # a new cycle restarts at the top
    assert sched(9) == pytest.approx(0.2 * (math.cos(0.9 * math.pi) + 1))
    assert all(sched(k) > sched(k + 1) for k in range(9))
    assert cycle_position(13, 10) == pytest.approx(0.3)


def test_polynomial_schedule_decays_as_welling_teh():
    sched = polynomial_schedule(0.1, offset=100, decay=0.55)
    assert sched(0) == pytest.approx(0.1)
    assert sched(100) == pytest.approx(0.1 * 2**-0.55)
    with pytest.raises(ValueError, match="decay"):
        polynomial_schedule(0.1, offset=10, decay=0.4)


def test_make_schedule_checks_its_input():
    assert make_schedule(0.3)(1234) == 0.3
    assert make_schedule(lambda k: 1.0 / (k + 1))(3) == 0.25
    assert make_schedule(1.0, "polynomial", num_steps=1000)(100) == pytest.approx(2**-0.55)
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_schedule(0.1, "exponential")
    with pytest.raises(ValueError, match="step_size must be positive"):
        make_schedule(-0.1)
    with pytest.raises(ValueError, match="step_size must be a finite number"):
        make_schedule(float("nan"))
    with pytest.raises(TypeError, match="step_size"):
        make_schedule("0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already a schedule"):
        make_schedule(lambda k: 0.1, "polynomial", num_steps=10)
    with pytest.raises(ValueError, match="cycle_length"):
        make_schedule(0.1, "cyclical")
