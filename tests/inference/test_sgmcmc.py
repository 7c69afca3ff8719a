"""SG-MCMC engines: exactness on conjugate targets with minibatches, the SGD limit, seeding,
batch-size independence, DataLoaders, generic Pyro models, bad input.

Tolerance rationale (stated up front, as SG-MCMC is biased). On a Gaussian target the
SG chains are affine in the state with unbiased random coefficients, so their stationary
*mean* is the posterior mean exactly; their stationary *covariance* is off by ``O(eps)``
(discretisation) plus ``O(eps V)`` (minibatch gradient noise of covariance ``V``). For each
run below :func:`_predicted_cov_bias` computes that bias from the discrete-time Lyapunov
equation of the chain (minibatch noise linearised at the posterior mean) and the test
asserts it is below ``BIAS_BUDGET`` = 2% of ``sd_i sd_j``. The MCSE z-tests of
``scenarios.assert_moments_match`` (3 means + 6 covariances, Bonferroni at family-wise rate
1e-3) then see the bias as a shift of at most ~0.3 standard errors on the covariance
entries (their relative MCSE is about 5% with the ESS used here), which raises the
family-wise false-failure rate from 1e-3 to at most ~2e-3.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from scenarios import (
    assert_moments_match,
    bayesian_linear_regression,
    conjugate_gaussian_mean,
    moment_draws,
    z_critical,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bayesnets import BayesianNet, Gaussian
from inference import diagnostics
from inference.sgmcmc import SGHMC, SGLD, AdaptiveSGHMC, CyclicalSGMCMC, make_potential
from priors import IIDGaussian

#: Largest predicted covariance bias (relative to sd_i sd_j) a statistical test may carry.
BIAS_BUDGET = 0.02

N, NOISE, PRIOR = 30, 1.0, 1.0


def _linear_model(d: int, **tkwargs) -> BayesianNet:
    return BayesianNet(nn.Linear(d, 1).to(**tkwargs), IIDGaussian(PRIOR), Gaussian(scale=NOISE))


def _coefficients(post) -> torch.Tensor:
    """``[chain, draw, d + 1]``: weights then bias."""
    return torch.cat([post["weight"].flatten(2), post["bias"]], -1)


def _regression(**tkwargs):
    return bayesian_linear_regression(n=N, d=2, prior_scale=PRIOR, noise=NOISE, **tkwargs)


def _predicted_cov_bias(x, y, target, batch_size: int, step_size: float, friction: float | None) -> float:
    """Largest ``|Sigma_chain - Sigma| / (sd_i sd_j)`` of SGLD (``friction=None``) or SGHMC on
    Bayesian linear regression, from the stationary covariance of the linearised chain."""
    x, y = x.cpu(), y.cpu()
    mean, cov = target.mean.cpu(), target.cov.cpu()
    n, d = x.shape[0], cov.shape[0]
    xa = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)
    precision = torch.linalg.inv(cov)
    # Minibatch noise of the rescaled likelihood gradient at the posterior mean (sampling
    # B of N rows without replacement).
    per_row = xa * (y - xa @ mean).unsqueeze(-1) / NOISE**2
    v = n**2 * (n - batch_size) / (batch_size * (n - 1)) * torch.cov(per_row.T, correction=0)
    eye, eps = torch.eye(d, dtype=x.dtype), step_size
    if friction is None:  # theta' = theta + eps/2 (g + noise) + sqrt(eps) xi
        f = eye - eps / 2 * precision
        q = eps * eye + eps**2 / 4 * v
    else:  # r' = (1 - eps C) r + eps (g + noise) + N(0, 2 eps C);  theta' = theta + eps r'
        w = eps**2 * v + 2 * eps * friction * eye
        f = torch.cat([torch.cat([eye - eps**2 * precision, eps * (1 - eps * friction) * eye], 1),
                       torch.cat([-eps * precision, (1 - eps * friction) * eye], 1)])
        q = torch.cat([torch.cat([eps**2 * w, eps * w], 1), torch.cat([eps * w, w], 1)])
    k = f.shape[0]
    stationary = torch.linalg.solve(torch.eye(k * k, dtype=x.dtype) - torch.kron(f, f), q.reshape(-1))
    sd = cov.diagonal().sqrt()
    return float(((stationary.reshape(k, k)[:d, :d] - cov) / torch.outer(sd, sd)).abs().max())


def test_sgld_matches_conjugate_linear_regression_with_minibatches(tkwargs):
    # Bias budget and false-failure rate: see the module docstring (predicted bias ~1.5%).
    x, y, target = _regression(**tkwargs)
    eps, batch = 1e-3, 15
    assert _predicted_cov_bias(x, y, target, batch, eps, None) < BIAS_BUDGET
    engine = SGLD(step_size=eps, num_warmup=500, num_samples=100, thinning=10, num_chains=64, batch_size=batch,
                  seed=11)
    post = engine.fit(_linear_model(2, **tkwargs), x, y, progress=False)
    assert post["weight"].shape == (64, 100, 1, 2) and post["weight"].dtype == torch.float64
    assert post["weight"].device == x.device
    assert_moments_match(_coefficients(post), target)
    assert post.stats["lp"].shape == (64, 100)
    assert torch.all(post.stats["step_size"] == eps)
    assert post.attrs["batch_size"] == batch and post.attrs["num_data"] == N


def _two_sample_z(a: torch.Tensor, b: torch.Tensor, target) -> torch.Tensor:
    """|difference of the two runs' estimates| / sqrt(MCSE_a^2 + MCSE_b^2) for every mean and
    covariance entry (independent runs)."""
    qa, qb = moment_draws(a, target), moment_draws(b, target)
    sa = diagnostics.mcse({k: v.cpu() for k, v in qa.items()})
    sb = diagnostics.mcse({k: v.cpu() for k, v in qb.items()})
    zs = []
    for key in ("mean", "cov"):
        diff = qa[key].mean((0, 1)).cpu() - qb[key].mean((0, 1)).cpu()
        zs.append(diff.abs() / (sa[key].double() ** 2 + sb[key].double() ** 2).sqrt())
    return torch.cat(zs)


def test_sghmc_matches_conjugate_linear_regression_for_any_batch_size(tkwargs):
    # Full batch and half batches: each run matches the exact posterior (bias budget as in the
    # module docstring), and the two runs match each other: a two-sample z-test on the 3
    # means and 6 covariances, Bonferroni at family-wise false-failure rate 1e-3 (plus the
    # <2% bias difference, ~0.3 combined standard errors at most).
    x, y, target = _regression(**tkwargs)
    eps, friction = 1e-2, 10.0
    runs = {}
    for batch, seed in ((N, 21), (N // 2, 22)):
        assert _predicted_cov_bias(x, y, target, batch, eps, friction) < BIAS_BUDGET
        engine = SGHMC(step_size=eps, friction=friction, num_warmup=200, num_samples=100, thinning=6,
                       num_chains=64, batch_size=batch, seed=seed)
        post = engine.fit(_linear_model(2, **tkwargs), x, y, progress=False)
        runs[batch] = _coefficients(post)
        assert_moments_match(runs[batch], target)
    z = _two_sample_z(runs[N], runs[N // 2], target)
    assert bool((z < z_critical(z.numel())).all()), f"batch size changed the draws' moments: z = {z.tolist()}"


def test_adaptive_sghmc_matches_conjugate_linear_regression(tkwargs):
    # After burn-in the preconditioner is ~ 1/sqrt(E (grad U)^2) ~ 1/8 here, so the chain is
    # SGHMC with effective step lr * M^-1/2 ~ 0.007 and momentum decay 0.05 (friction ~7): by
    # _predicted_cov_bias that is < 1% covariance bias with half batches. Rate as above.
    x, y, target = _regression(**tkwargs)
    assert _predicted_cov_bias(x, y, target, N // 2, 0.007, 7.0) < BIAS_BUDGET / 2
    engine = AdaptiveSGHMC(step_size=2e-2, momentum_decay=0.05, num_warmup=300, num_samples=100, thinning=6,
                           num_chains=64, batch_size=N // 2, seed=5)
    post = engine.fit(_linear_model(2, **tkwargs), x, y, progress=False)
    assert_moments_match(_coefficients(post), target)


def test_cyclical_sghmc_collects_from_the_sampling_stage(tkwargs):
    # Three cycles of 300 steps; noise is off in the first 25% of each (SGD with momentum
    # towards a mode) and on after it, while the cosine step is still >= 0.85 of its peak
    # 0.018 and the chain re-equilibrates within ~40 steps (_predicted_cov_bias at eps=0.018:
    # < 2%, and smaller as the step decays). Draws come from the end of each cycle, where the
    # step has fallen below 0.2 of the peak. Rate as in the module docstring.
    x, y, target = _regression(**tkwargs)
    assert _predicted_cov_bias(x, y, target, N // 2, 1.8e-2, 10.0) < BIAS_BUDGET
    engine = CyclicalSGMCMC(step_size=1.8e-2, num_cycles=3, cycle_length=300, num_samples=36, exploration=0.25,
                            thinning=4, sampler="sghmc", friction=10.0, num_chains=32, batch_size=N // 2, seed=3)
    assert engine._collect_at()[:2] == [300 - 1 - 11 * 4, 300 - 1 - 10 * 4]
    post = engine.fit(_linear_model(2, **tkwargs), x, y, progress=False)
    assert post["weight"].shape == (32, 36, 1, 2)
    steps = post.stats["step_size"][0]
    assert float(steps.max()) < 0.2 * 1.8e-2 and float(steps.min()) > 0
    assert_moments_match(_coefficients(post), target)


def test_sghmc_on_a_pyro_model_with_a_subsampled_plate(tkwargs):
    # The trace path: a plain Pyro model whose plate is subsampled (Pyro scales by N/B).
    # Gaussian mean, lambda = 20.25: SGHMC(eps=0.02, C=9) has discretisation bias < 0.5%
    # and minibatch bias eps V / (2 C) ~ 1% on the variance; rate as in the module docstring.
    y, target = conjugate_gaussian_mean(n=20, prior_scale=2.0, noise=1.0, **tkwargs)
    x = torch.zeros(20, 1, **tkwargs)

    def model(x, y=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), **tkwargs), 2.0))
        with pyro.plate("data", 20, subsample_size=x.shape[0]):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    engine = SGHMC(step_size=0.02, friction=9.0, num_warmup=60, num_samples=60, thinning=5, num_chains=8,
                   batch_size=10, seed=4)
    post = engine.fit(model, x, y, progress=False)
    assert post["mu"].shape == (8, 60)
    assert_moments_match(post["mu"].unsqueeze(-1), target)
    assert post.log_likelihood().shape == (8, 60, 20)


def test_pyro_model_without_subsampling_is_refused_on_minibatches(tkwargs):
    y, _ = conjugate_gaussian_mean(n=20, **tkwargs)
    x = torch.zeros(20, 1, **tkwargs)

    def model(x, y=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), **tkwargs), 2.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match="subsampled plate"):
        SGLD(num_warmup=1, num_samples=1, batch_size=5).fit(model, x, y, progress=False)


def test_trace_potential_of_bayesian_net_equals_its_log_density(tkwargs):
    # BayesianNet.forward(x, y, num_data=N) has a subsampled plate: Pyro's trace must give the
    # same minibatch log density (and gradient) as the fast log_density(num_data=N).
    x, y, _ = _regression(**tkwargs)
    model = _linear_model(2, **tkwargs)
    fast = make_potential(model, x[:10], y[:10], num_data=N)
    # A wrapper without log_density forces the trace path on the same Pyro model.
    traced = make_potential(lambda x, y=None, num_data=None: model(x, y, num_data=num_data), x[:10], y[:10], N)
    z = torch.randn(3, fast.view.size, **tkwargs)
    g_fast, v_fast = fast(z, x[:10], y[:10], per_chain=False)
    g_trace, v_trace = traced(z, x[:10], y[:10], per_chain=False)
    torch.testing.assert_close(v_trace, v_fast)
    torch.testing.assert_close(g_trace, g_fast)
    with pytest.raises(ValueError, match="num_data"):
        model(x, y, num_data=5)


def test_zero_temperature_sghmc_is_sgd_with_momentum(tkwargs):
    # temperature=0 and no noise estimate: the engine's iterates equal torch.optim.SGD with
    # lr = eps^2 and momentum = 1 - eps C on -log_density (full batch, from the same start).
    x, y, _ = _regression(**tkwargs)
    model = _linear_model(2, **tkwargs)
    eps, friction = 0.05, 4.0
    post = SGHMC(step_size=eps, friction=friction, temperature=0.0, num_warmup=0, num_samples=40, num_chains=1,
                 init="zeros", seed=0).fit(model, x, y, progress=False)
    params = {n: torch.zeros(s, **tkwargs, requires_grad=True) for n, s in model.latent_shapes(x).items()}
    opt = torch.optim.SGD(list(params.values()), lr=eps**2, momentum=1 - eps * friction)
    for k in range(40):
        torch.testing.assert_close(post["weight"][0, k], params["weight"].detach(), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(post["bias"][0, k], params["bias"].detach(), rtol=1e-12, atol=1e-13)
        opt.zero_grad()
        (-model.log_density(params, x, y)).backward()
        opt.step()


def test_same_seed_same_draws_and_chains_differ(tkwargs):
    x, y, _ = _regression(**tkwargs)
    model = _linear_model(2, **tkwargs)
    engine = SGLD(step_size=1e-3, num_warmup=10, num_samples=20, num_chains=3, batch_size=10, seed=7)
    a = engine.fit(model, x, y, progress=False)
    b = engine.fit(model, x, y, progress=False)
    assert torch.equal(a["weight"], b["weight"]) and torch.equal(a.stats["lp"], b.stats["lp"])
    assert not torch.equal(a["weight"][0], a["weight"][1])
    c = SGLD(step_size=1e-3, num_warmup=10, num_samples=20, num_chains=3, batch_size=10, seed=8).fit(
        model, x, y, progress=False)
    assert not torch.equal(a["weight"], c["weight"])
    # seed=None follows torch's global seed.
    torch.manual_seed(3)
    d = SGLD(step_size=1e-3, num_warmup=5, num_samples=5, num_chains=2).fit(model, x, y, progress=False)
    torch.manual_seed(3)
    e = SGLD(step_size=1e-3, num_warmup=5, num_samples=5, num_chains=2).fit(model, x, y, progress=False)
    assert torch.equal(d["bias"], e["bias"])


def test_dataloader_data(tkwargs):
    x, y, _ = _regression(**tkwargs)
    model = _linear_model(2, **tkwargs)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    post = SGHMC(step_size=1e-2, friction=10.0, num_warmup=20, num_samples=10, num_chains=2, seed=1).fit(
        model, loader, progress=False)
    assert post["weight"].shape == (2, 10, 1, 2)
    assert post.attrs["num_data"] == N and post.attrs["batch_size"] == 8
    assert post.data is None
    assert post.predict(x).f.shape == (2, 10, N, 1)
    with pytest.raises(ValueError, match="batch_size is set by the DataLoader"):
        SGHMC(batch_size=8).fit(model, loader, progress=False)
    with pytest.raises(ValueError, match="through the loader"):
        SGHMC().fit(model, loader, y, progress=False)


def test_posterior_of_a_bnn_predicts_and_round_trips(tkwargs, tmp_path):
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 40, **tkwargs).unsqueeze(-1)
    y = torch.sin(2 * x).squeeze(-1) + 0.1 * torch.randn(40, **tkwargs)
    net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)).to(**tkwargs)
    model = BayesianNet(net, IIDGaussian(1.0), Gaussian(scale=0.1))
    post = SGHMC(step_size=3e-3, friction=20.0, num_warmup=300, num_samples=20, thinning=5, num_chains=4,
                 batch_size=10, seed=0).fit(model, x, y, progress=False)
    pred = post.predict(x)
    assert pred.f.shape == (4, 20, 40, 1)
    assert float((pred.mean("f").squeeze(-1) - y).pow(2).mean()) < 0.1  # it fits the data
    idata = post.to_arviz()
    assert "lp" in idata.sample_stats and "obs" in idata.log_likelihood
    post.save(tmp_path / "sghmc.safetensors")
    back = type(post).load(tmp_path / "sghmc.safetensors", model=model, device=x.device)
    assert torch.equal(back["0.weight"], post["0.weight"]) and back.attrs["engine"] == "SGHMC"


def test_a_diverging_chain_raises_with_the_fix(tkwargs):
    x, y, _ = _regression(**tkwargs)
    with pytest.raises(FloatingPointError, match="lower step_size"):
        SGLD(step_size=5.0, num_warmup=200, num_samples=1, num_chains=2).fit(_linear_model(2, **tkwargs), x, y,
                                                                             progress=False)


def test_bad_input(tkwargs):
    x, y, _ = _regression(**tkwargs)
    model = _linear_model(2, **tkwargs)
    with pytest.raises(ValueError, match="batch_size must be between 1 and the number of observations"):
        SGLD(batch_size=N + 1).fit(model, x, y, progress=False)
    with pytest.raises(ValueError, match="step_size must be positive"):
        SGLD(step_size=-1e-3)
    with pytest.raises(ValueError, match="step_size must be positive"):
        SGHMC(step_size=0.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        SGHMC(schedule="exponential")
    with pytest.raises(ValueError, match="belongs to CyclicalSGMCMC"):
        SGLD(schedule="cyclical")
    with pytest.raises(ValueError, match="temperature"):
        SGLD(temperature=-1.0)
    with pytest.raises(ValueError, match="friction"):
        SGHMC(friction=-1.0)
    with pytest.raises(ValueError, match="noise_estimate"):
        SGHMC(friction=1.0, noise_estimate=2.0)
    with pytest.raises(ValueError, match=r"step_size \* friction"):
        SGHMC(step_size=0.5, friction=5.0)
    with pytest.raises(ValueError, match="momentum_decay"):
        AdaptiveSGHMC(momentum_decay=1.5)
    with pytest.raises(ValueError, match="multiple of num_cycles"):
        CyclicalSGMCMC(num_cycles=3, num_samples=10)
    with pytest.raises(ValueError, match="sampling stage"):
        CyclicalSGMCMC(num_cycles=1, cycle_length=100, num_samples=30, exploration=0.8)
    with pytest.raises(ValueError, match="sampler"):
        CyclicalSGMCMC(sampler="nuts")
    with pytest.raises(ValueError, match="thinning"):
        SGLD(thinning=0)
    with pytest.raises(TypeError, match="DataLoader"):
        SGLD().fit(model, x.tolist(), y, progress=False)
    with pytest.raises(ValueError, match="y must have one row per row of x"):
        SGLD().fit(model, x, y[:-1], progress=False)
    with pytest.raises(ValueError, match="iteration 3"):
        SGLD(step_size=lambda k: 1e-3 if k < 3 else -1.0, num_warmup=5, num_samples=1).fit(
            model, x, y, progress=False)
