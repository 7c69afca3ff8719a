"""Meta-training: a few hundred CPU steps improve every model on held-out tasks, and a model
trained with empty contexts in the mix predicts the GP prior predictive when given none."""

from __future__ import annotations

import math

import pytest
import torch

from bayesnets.processes import (
    ANP,
    CNP,
    MPNP,
    NP,
    GPTaskSampler,
    NPTrainer,
    evaluate,
    fit,
    gp_test_set,
    log_likelihoods,
)
from bayesnets.processes.data import NOISE_STD, SCALE_RANGE
from inference.training import Fit

# Steps per model: the NP's ELBO starts slowly (the KL term first pulls q(z|C∪T) onto q(z|C)),
# so it gets more of its cheap steps; all four take a few seconds of CPU.
STEPS = {CNP: 200, NP: 400, ANP: 200, MPNP: 200}
EVAL_SAMPLES = 20
# Trained models must gain at least this many nats per target point on held-out tasks. Seen
# with these seeds: 0.10 (CNP) to 0.6 (ANP); the untrained models' scores spread by ~0.15.
MIN_GAIN = 0.05
# Empty-context predictions must be within this many nats per point of the exact prior
# predictive (a scale mixture of Gaussians no Gaussian predictive matches exactly: the best
# Gaussian is 0.045 nats/point worse on these tasks).
PRIOR_TOLERANCE = 0.15


@pytest.fixture(autouse=True)
def _one_thread():
    """These networks are tiny: intra-op threads only add synchronisation, which on a busy
    2-core machine made training several times slower. The caller's setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _exact_prior_log_likelihood(y: torch.Tensor) -> float:
    """Mean per-point log p(y) under the benchmark's prior marginal, y ~ N(0, s² + σ²), s ~ U(0.1, 1)
    (the lengthscale does not enter one point's marginal); midpoint rule over s."""
    lo, hi = SCALE_RANGE
    s = lo + (hi - lo) * (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000
    var = s**2 + NOISE_STD**2
    y = y.flatten().double().cpu()[:, None]
    lp = torch.logsumexp(-0.5 * y**2 / var - 0.5 * torch.log(2 * math.pi * var), dim=1) - math.log(s.numel())
    return lp.mean().item()


def _empty_context(model, tasks) -> tuple[float, float, float]:
    """Per-point log-likelihood of all points of ``tasks`` with no context; mean |μ| and mean σ."""
    lls, means, stds = [], [], []
    with torch.no_grad():
        for b in tasks:
            pred = model.predict(b.context_x[:, :0], b.context_y[:, :0], b.x, num_samples=EVAL_SAMPLES)
            lls.append(pred.log_prob(b.y).mean())
            means.append(pred.mean.abs().mean())
            stds.append(pred.stddev.mean())
    return tuple(torch.stack(v).mean().item() for v in (lls, means, stds))


@pytest.mark.parametrize("cls", list(STEPS), ids=lambda c: c.__name__)
def test_training_improves_held_out_likelihood(cls, device):
    torch.manual_seed(0)
    model = cls(hidden=32).to(device)
    held_out = gp_test_set("rbf", num_tasks=64, batch_size=32, seed=1, device=device)
    before = evaluate(model, held_out, num_samples=EVAL_SAMPLES)
    empty_before = _empty_context(model, held_out)[0]
    result = fit(model, GPTaskSampler(min_context=0), num_steps=STEPS[cls], batch_size=16, seed=0, progress=False)
    assert isinstance(result, Fit) and result.module is model and result.attrs["trainer"] == "NPTrainer"
    losses = result.history["loss"]
    assert losses.shape == (STEPS[cls],) and torch.isfinite(losses).all()
    assert losses[-50:].mean() < losses[:50].mean()
    after = evaluate(model, held_out, num_samples=EVAL_SAMPLES)
    assert after["target_ll"] > before["target_ll"] + MIN_GAIN, (before, after)
    assert after["context_ll"] > before["context_ll"] + MIN_GAIN, (before, after)

    exact = _exact_prior_log_likelihood(torch.cat([b.y.flatten() for b in held_out]))
    ll, mean, std = _empty_context(model, held_out)
    assert ll > empty_before and abs(ll - exact) < PRIOR_TOLERANCE, (empty_before, ll, exact)
    marginal_std = math.sqrt((SCALE_RANGE[1] ** 3 - SCALE_RANGE[0] ** 3) / (3 * (SCALE_RANGE[1] - SCALE_RANGE[0])))
    assert mean < 0.2 and abs(std - marginal_std) < 0.2, (mean, std, marginal_std)


def test_fit_is_reproducible_and_checks_its_arguments(device):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = CNP(hidden=8).to(device)
        runs.append(fit(model, GPTaskSampler(), num_steps=3, batch_size=4, seed=5, progress=False).history["loss"])
    assert torch.equal(runs[0], runs[1])
    with pytest.raises(TypeError, match="NeuralProcess"):
        fit(torch.nn.Linear(1, 1), GPTaskSampler(), num_steps=1)
    with pytest.raises(ValueError, match="num_steps"):
        fit(model, GPTaskSampler(), num_steps=0)
    with pytest.raises(TypeError, match="TaskSampler"):
        NPTrainer(num_steps=1).fit(model, gp_test_set("rbf", num_tasks=4, batch_size=4))
    b = GPTaskSampler().sample(3, num_context=4, num_target=6, device=device)
    ll = log_likelihoods(model, b)
    assert ll["context"].shape == ll["target"].shape == (3,)
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, [])
