"""The LC-PFN learning-curve prior: the rejection rule, the noise model, right-censoring,
determinism per seed, and agreement with an independent (NumPy, loop-free) implementation of
the paper's sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scenarios import z_critical

from priors.tasks import LearningCurvePrior, TaskPrior, prior_from_config
from priors.tasks.learning_curves import (
    CURVE_LENGTH,
    PARAMETERS,
    censor,
    curve_mean,
    draw_cutoffs,
    epochs,
    is_valid,
)


def _gen(device: torch.device, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def test_shapes_epochs_registry_and_determinism(tkwargs: dict) -> None:
    prior = LearningCurvePrior().to(**tkwargs)
    x, y = prior.sample(16, CURVE_LENGTH, generator=_gen(tkwargs["device"]))
    assert x.shape == (16, 100, 1) and y.shape == (16, 100) and x.dtype == y.dtype == tkwargs["dtype"]
    assert torch.equal(x[3, :, 0], torch.arange(1, 101, **tkwargs))  # epochs 1..100 in order
    x2, y2 = prior.sample(16, CURVE_LENGTH, generator=_gen(tkwargs["device"]))
    assert torch.equal(x, x2) and torch.equal(y, y2)  # same seed, same batch
    _, y3 = prior.sample(16, CURVE_LENGTH, generator=_gen(tkwargs["device"], 1))
    assert not torch.equal(y, y3)
    c1 = prior.sample_censored(8, generator=_gen(tkwargs["device"], 5))
    c2 = prior.sample_censored(8, generator=_gen(tkwargs["device"], 5))
    assert all(torch.equal(a, b) for a, b in zip(c1, c2, strict=True))
    assert "LearningCurvePrior" in TaskPrior.registry
    rebuilt = prior_from_config(LearningCurvePrior(noise_loc=-3.0).config())
    assert isinstance(rebuilt, LearningCurvePrior) and rebuilt.noise_loc == -3.0 and rebuilt.noisy


def test_every_draw_obeys_the_rejection_rule_and_the_noise_model(tkwargs: dict) -> None:
    prior = LearningCurvePrior().to(**tkwargs)
    x, y, params = prior.sample_with_parameters(2000, CURVE_LENGTH, _gen(tkwargs["device"], 1))
    f = params["f"]
    assert torch.allclose(f, curve_mean(params, x[0, :, 0]))
    assert bool((f[:, -1] > f[:, 0]).all()) and bool(((f >= 0) & (f <= 1)).all()) and bool(is_valid(f).all())
    assert bool((y < 0).any() or (y > 1).any())  # the noisy values may leave [0, 1] (paper)
    # The rule looks at the noise-free curve only, so the kept noise levels still follow the
    # untruncated prior log sigma ~ N(-4, 1), and (y - f) / sigma is i.i.d. N(0, 1).
    # z-tests on 4 moments; Bonferroni at a total false-failure rate of 1e-4.
    crit = z_critical(4, 1e-4)
    log_sigma = params["sigma"].log()
    n = log_sigma.numel()
    assert abs(float(log_sigma.mean()) + 4.0) / math.sqrt(1 / n) < crit
    assert abs(float(log_sigma.var()) - 1.0) / math.sqrt(2 / n) < crit
    eps = ((y - f) / params["sigma"][:, None]).flatten()
    assert abs(float(eps.mean())) / math.sqrt(1 / eps.numel()) < crit
    assert abs(float((eps * eps).mean()) - 1) / math.sqrt(2 / eps.numel()) < crit
    noise_free = LearningCurvePrior(noisy=False).to(**tkwargs)
    _, y_clean, p_clean = noise_free.sample_with_parameters(8, CURVE_LENGTH, _gen(tkwargs["device"]))
    assert torch.equal(y_clean, p_clean["f"])


def test_the_rule_rejects_what_it_should(tkwargs: dict) -> None:
    t = epochs(5, torch.zeros((), **tkwargs))
    good = 0.2 + 0.1 * t.log()
    assert bool(is_valid(good))
    assert not bool(is_valid(good.flip(0)))  # f(m) < f(1)
    assert not bool(is_valid(torch.where(t == 3, 1.01, good)))  # leaves [0, 1]
    assert not bool(is_valid(good - 0.25))  # below 0
    assert not bool(is_valid(torch.where(t == 2, math.nan, good)))


def _numpy_reference(n: int, seed: int) -> dict[str, np.ndarray]:
    """The paper's sampler written independently in NumPy (lcpfn/curves.py "peaked" priors with
    ``rng.lognormal(mean, sigma)``, weights U(0, 1) as in lcpfn/domhan_prior.py, rejection on the
    noise-free curve): the accepted parameters ``[n]`` and noise-free curves ``"f"`` ``[n, 100]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, 101, dtype=np.float64)
    draws: list[dict[str, np.ndarray]] = []
    while sum(len(d["f"]) for d in draws) < n:
        m = 4 * n
        p = {"w_pow3": rng.uniform(0, 1, m), "w_janoschek": rng.uniform(0, 1, m), "w_ilog2": rng.uniform(0, 1, m),
             "pow3_c": rng.uniform(0, 1.25, m), "pow3_a": rng.uniform(-0.6, 0.6, m),
             "pow3_alpha": rng.lognormal(0, 2, m),
             "janoschek_alpha": rng.uniform(0, 1, m), "janoschek_beta": rng.uniform(0, 2, m),
             "janoschek_kappa": rng.lognormal(-2, 1, m), "janoschek_delta": rng.lognormal(0, 0.5, m),
             "ilog2_c": rng.uniform(0, 1, m), "ilog2_a": rng.uniform(-0.5, 0.5, m), "sigma": rng.lognormal(-4, 1, m)}
        c = {k: v[:, None] for k, v in p.items()}
        pow3 = c["pow3_c"] - c["pow3_a"] * t ** (-c["pow3_alpha"])
        ja = c["janoschek_alpha"]
        jan = ja - (ja - c["janoschek_beta"]) * np.exp(-c["janoschek_kappa"] * t ** c["janoschek_delta"])
        ilog = c["ilog2_c"] - c["ilog2_a"] / np.log(t + 1)
        f = c["w_pow3"] * pow3 + c["w_janoschek"] * jan + c["w_ilog2"] * ilog
        ok = (f[:, -1] > f[:, 0]) & (f >= 0).all(1) & (f <= 1).all(1) & ~np.isnan(f).any(1)
        draws.append({**{k: v[ok] for k, v in p.items()}, "f": f[ok]})
    return {k: np.concatenate([d[k] for d in draws])[:n] for k in draws[0]}


def test_matches_an_independent_implementation_of_the_paper_sampler() -> None:
    """Two-sample z-tests, ours (torch, vectorised rounds) vs a NumPy reference, of the mean and
    variance of every accepted parameter (log scale for log-normal ones) and of the curve mean at
    epochs 1, 10, 100: 29 tests, Bonferroni at a total false-failure rate of 1e-4. (Curve values
    alone are insensitive to e.g. the log-normal spreads; the truncated parameter laws are not.)"""
    n = 5000
    ours = {k: v.numpy() for k, v in
            LearningCurvePrior().double().sample_parameters(n, CURVE_LENGTH, _gen(torch.device("cpu"), 7)).items()}
    ref = _numpy_reference(n, 11)
    assert set(ours) == set(ref) == {*PARAMETERS, "f"}
    crit = z_critical(2 * len(PARAMETERS) + 3, 1e-4)

    def z(a: np.ndarray, b: np.ndarray) -> float:
        return float((a.mean() - b.mean()) / math.sqrt(a.var() / n + b.var() / n))

    for name, spec in PARAMETERS.items():
        a, b = ours[name], ref[name]
        if spec.kind == "lognormal":
            a, b = np.log(a), np.log(b)
        assert abs(z(a, b)) < crit, (name, "mean", z(a, b))
        sa, sb = (a - a.mean()) ** 2, (b - b.mean()) ** 2
        assert abs(z(sa, sb)) < crit, (name, "variance", z(sa, sb))
    for col in (0, 9, 99):
        assert abs(z(ours["f"][:, col], ref["f"][:, col])) < crit, col


def test_right_censoring(tkwargs: dict) -> None:
    prior = LearningCurvePrior().to(**tkwargs)
    batch = prior.sample_censored(64, generator=_gen(tkwargs["device"], 3))
    assert batch.cutoff.dtype == torch.int64 and bool(((batch.cutoff >= 1) & (batch.cutoff <= 99)).all())
    t = batch.x[..., 0]
    assert torch.equal(batch.observed, t <= batch.cutoff[:, None].to(t))
    assert bool(batch.observed[:, 0].all()) and not bool(batch.observed[:, -1].any())  # >= 1 seen, >= 1 left
    # The cut-off is uniform on {1, ..., 99}: chi-square test on 99 cells, false-failure rate 1e-4
    # (Wilson-Hilferty approximation of the chi-square quantile).
    cut = draw_cutoffs(99 * 200, CURVE_LENGTH, _gen(tkwargs["device"], 4), batch.y)
    counts = torch.bincount(cut, minlength=100)[1:].double()
    assert int(counts.sum()) == 99 * 200 and int(torch.bincount(cut, minlength=100)[0]) == 0
    chi2 = float(((counts - 200) ** 2 / 200).sum())
    k, z = 98, z_critical(1, 2e-4)  # one-sided 1e-4
    assert chi2 < k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3, chi2
    tx, ty, qx, qy = censor(batch.x, batch.y, 30)
    assert tx.shape == (64, 30, 1) and qy.shape == (64, 70) and float(qx[0, 0, 0]) == 31.0
    assert torch.equal(torch.cat([ty, qy], 1), batch.y)
    with pytest.raises(ValueError, match="cutoff"):
        censor(batch.x, batch.y, 100)
    with pytest.raises(ValueError, match="min_observed"):
        draw_cutoffs(4, 100, None, batch.y, min_observed=0)
