"""BatchedHMC: exactness on known posteriors, per-chain adaptation, the Posterior contract, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from scenarios import GaussianTarget, assert_moments_match
from torch import nn

from bayesnets import BayesianNet, Bernoulli, Gaussian
from inference.density import FlatView, autograd_grad_and_value, make_potential
from inference.hmc import BatchedHMC, ascend
from priors import IIDGaussian

#: Family-wise false-failure rate of each statistical test below.
ALPHA = 1e-3


def _correlated_gaussian(d: int, **tkwargs) -> GaussianTarget:
    """A 10-D Gaussian with scales from 0.1 to 10 and strong correlations (condition number ~1e4)."""
    g = torch.Generator(device=tkwargs["device"]).manual_seed(3)
    a = torch.randn(d, d, generator=g, **tkwargs)
    corr = a @ a.T / d + 0.05 * torch.eye(d, **tkwargs)
    s = torch.logspace(-1, 1, d, **tkwargs) / corr.diagonal().sqrt()
    cov = corr * s[:, None] * s[None, :]
    return GaussianTarget(torch.randn(d, generator=g, **tkwargs), cov)


def _gaussian_log_density(target: GaussianTarget):
    precision = torch.linalg.inv(target.cov)

    def log_density(z: torch.Tensor) -> torch.Tensor:
        c = z - target.mean
        return -0.5 * ((c @ precision) * c).sum(-1)

    return log_density


@pytest.mark.parametrize("dense", [False, True])
def test_correlated_gaussian_is_stationary(tkwargs, dense):
    # MCSE z-test of the 10 means and 55 covariances, family-wise false-failure rate 1e-3.
    target = _correlated_gaussian(10, **tkwargs)
    engine = BatchedHMC(num_warmup=300, num_samples=400, num_chains=8, dense_mass=dense, seed=11)
    init = torch.randn(8, 10, **tkwargs)
    post = engine.sample(_gaussian_log_density(target), init, progress=False)
    assert post["z"].shape == (8, 400, 10) and post["z"].dtype == torch.float64
    assert_moments_match(post["z"], target, alpha=ALPHA)
    assert not post.stats["diverging"].any()
    imm = post.stats["inverse_mass_matrix"]
    assert imm.shape == ((8, 10, 10) if dense else (8, 10))


def _logistic_data(**tkwargs):
    g = torch.Generator(device=tkwargs["device"]).manual_seed(5)
    x = torch.randn(40, 2, generator=g, **tkwargs)
    w_true = torch.tensor([1.5, -1.0], **tkwargs)
    y = (torch.rand(40, generator=g, **tkwargs) < torch.sigmoid(x @ w_true)).to(x.dtype)
    return x, y


def _grid_posterior(x: torch.Tensor, y: torch.Tensor, prior_scale: float) -> GaussianTarget:
    """Posterior mean and covariance of 2-D Bayesian logistic regression by quadrature on a fine
    grid (independent of any sampler; the grid spans +-8 posterior sd around the mode)."""
    w = torch.zeros(2, dtype=torch.float64, device=x.device, requires_grad=True)
    xd, yd = x.double(), y.double()

    def log_post(w):
        f = xd @ w.T if w.dim() > 1 else xd @ w
        ll = (yd * f - torch.nn.functional.softplus(f)) if w.dim() == 1 else (
            yd.unsqueeze(-1) * f - torch.nn.functional.softplus(f)).sum(0)
        return (ll.sum() if w.dim() == 1 else ll) - 0.5 * (w**2).sum(-1) / prior_scale**2

    opt = torch.optim.LBFGS([w], max_iter=100, line_search_fn="strong_wolfe")
    opt.step(lambda: (opt.zero_grad(), (-log_post(w)).backward(), -log_post(w))[-1])
    w = w.detach()
    hess = torch.autograd.functional.hessian(lambda v: -log_post(v), w)
    sd = torch.linalg.inv(hess).diagonal().sqrt()
    axes = [torch.linspace(float(w[i] - 8 * sd[i]), float(w[i] + 8 * sd[i]), 801, dtype=torch.float64,
                           device=x.device) for i in range(2)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        lp = log_post(grid)
    p = torch.softmax(lp, 0)
    mean = (p.unsqueeze(-1) * grid).sum(0)
    c = grid - mean
    cov = (p[:, None, None] * c.unsqueeze(-1) * c.unsqueeze(-2)).sum(0)
    return GaussianTarget(mean, cov)


def test_logistic_regression_matches_grid_posterior(tkwargs):
    # 2 means + 3 covariances, MCSE z-test at family-wise rate 1e-3, against quadrature.
    x, y = _logistic_data(**tkwargs)
    model = BayesianNet(nn.Linear(2, 1, bias=False).to(**tkwargs), IIDGaussian(1.0), Bernoulli())
    target = _grid_posterior(x, y, 1.0)
    post = BatchedHMC(num_warmup=200, num_samples=300, num_chains=8, seed=2).fit(model, x, y, progress=False)
    assert post["weight"].shape == (8, 300, 1, 2)
    assert_moments_match(post["weight"].flatten(2), target, alpha=ALPHA)


def test_each_chain_adapts_to_its_own_target(tkwargs):
    # Chain c samples N(0, s_c^2 I) with scales four decades apart. Per-chain adaptation must
    # give each chain its own inverse mass matrix (~ s_c^2) while the step sizes, in the
    # adapted metric, come out alike; and each chain's draws must match its own target
    # (MCSE z-test per chain; Bonferroni over the 4 chains keeps the family-wise rate 1e-3).
    scales = torch.tensor([0.01, 1.0, 100.0, 1.0], **tkwargs)
    d = 3

    def log_density(z):
        return -0.5 * ((z / scales.unsqueeze(-1)) ** 2).sum(-1)

    init = torch.randn(4, d, **tkwargs) * scales.unsqueeze(-1)
    engine = BatchedHMC(num_warmup=400, num_samples=600, num_chains=4, adapt_trajectory_length=False,
                        trajectory_length=2.0, max_num_steps=16, seed=4)
    post = engine.sample(log_density, init, progress=False)
    imm = post.stats["inverse_mass_matrix"]
    ratio = imm / scales.unsqueeze(-1) ** 2
    # A variance from the last 200-draw window is within a factor 2 of the truth with
    # overwhelming probability (relative SE about 0.1-0.2 given the autocorrelation).
    assert bool(((ratio > 0.5) & (ratio < 2.0)).all()), ratio
    eps = post.stats["step_size"][:, 0]
    assert float(eps.max() / eps.min()) < 3.0, eps
    for c in range(4):
        target = GaussianTarget(torch.zeros(d, **tkwargs), torch.eye(d, **tkwargs) * scales[c] ** 2)
        assert_moments_match(post["z"][c:c + 1], target, alpha=ALPHA / 4)


def test_chains_get_their_own_random_streams(tkwargs):
    # All chains start at the same point; different random streams must separate them at
    # once, and the same seed must reproduce every draw.
    target = GaussianTarget(torch.zeros(2, **tkwargs), torch.eye(2, **tkwargs))
    init = torch.zeros(4, 2, **tkwargs)
    engine = BatchedHMC(num_warmup=20, num_samples=10, num_chains=4, seed=9)
    a = engine.sample(_gaussian_log_density(target), init, progress=False)
    b = engine.sample(_gaussian_log_density(target), init, progress=False)
    assert torch.equal(a["z"], b["z"])
    z = a["z"][:, 0]
    assert all(not torch.equal(z[i], z[j]) for i in range(4) for j in range(i + 1, 4))
    c = BatchedHMC(num_warmup=20, num_samples=10, num_chains=4, seed=10).sample(
        _gaussian_log_density(target), init, progress=False)
    assert not torch.equal(a["z"], c["z"])


def _tiny_bnn(**tkwargs) -> BayesianNet:
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1)).to(**tkwargs)
    return BayesianNet(net, IIDGaussian(1.0), Gaussian(scale=0.3))


def test_posterior_contract_in_float32(device):
    tk = {"device": device, "dtype": torch.float32}
    x = torch.linspace(-2, 2, 20, **tk).unsqueeze(-1)
    y = torch.sin(x[:, 0])
    model = _tiny_bnn(**tk)
    post = BatchedHMC(num_warmup=30, num_samples=15, num_chains=3, max_num_steps=8, seed=0).fit(
        model, x, y, progress=False)
    assert post["0.weight"].shape == (3, 15, 4, 1) and post["0.weight"].dtype == torch.float32
    for key in ("acceptance_rate", "step_size", "diverging", "energy", "n_steps", "lp"):
        assert post.stats[key].shape == (3, 15), key
    assert post.stats["diverging"].dtype == torch.bool and post.stats["n_steps"].dtype == torch.long
    assert bool((post.stats["n_steps"] >= 1).all())
    assert post.attrs["engine"] == "BatchedHMC" and post.attrs["trajectory_length"] > 0
    assert post.predict(x[:5]).f.shape == (3, 15, 5, 1)
    idata = post.to_arviz()
    assert {"energy", "acceptance_rate", "diverging", "lp"} <= set(idata.sample_stats.data_vars)


def test_divergences_are_counted_and_explained(tkwargs):
    target = GaussianTarget(torch.zeros(3, **tkwargs), torch.eye(3, **tkwargs) * 1e-4)
    engine = BatchedHMC(num_warmup=0, num_samples=10, num_chains=2, step_size=1.0, adapt_step_size=False,
                        adapt_trajectory_length=False, trajectory_length=5.0, seed=0)
    with pytest.warns(RuntimeWarning, match="divergent.*target_accept"):
        post = engine.sample(_gaussian_log_density(target), torch.full((2, 3), 0.01, **tkwargs), progress=False)
    assert int(post.stats["diverging"].sum()) > 0
    assert float(post.stats["acceptance_rate"].max()) < 1e-6


class _LogNet(nn.Module):
    """``f = x * log(w)``: a NaN/-inf log density where ``w <= 0``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w.log()


def test_nan_at_the_start_names_the_site(tkwargs):
    x = torch.linspace(-1, 1, 10, **tkwargs).unsqueeze(-1)
    model = BayesianNet(_LogNet().to(**tkwargs), IIDGaussian(1.0), Gaussian(scale=0.5))
    engine = BatchedHMC(num_warmup=5, num_samples=5, num_chains=2, init="zeros", seed=0)
    with pytest.raises(ValueError, match=r"start point of chain 0.*'w'.*init"):
        engine.fit(model, x, x[:, 0], progress=False)
    # A batched log density: coordinates are named by a FlatView when one is given.
    view = FlatView({"a": torch.Size([2]), "b": torch.Size([])})

    def log_density(z):
        return -(z[:, 2].log() + z[:, :2].pow(2).sum(-1))

    with pytest.raises(ValueError, match=r"site\(s\) \['b'\]"):
        BatchedHMC(num_warmup=5, num_samples=5, num_chains=2).sample(
            log_density, torch.zeros(2, 3, **tkwargs), progress=False, view=view)


def test_bad_settings_and_inputs(tkwargs):
    for kwargs, word in [({"num_chains": 0}, "num_chains"), ({"num_samples": 0}, "num_samples"),
                         ({"num_warmup": -1}, "num_warmup"), ({"target_accept": 1.0}, "target_accept"),
                         ({"max_num_steps": 0}, "max_num_steps"), ({"step_size": 0.0}, "step_size"),
                         ({"trajectory_length": -1.0}, "trajectory_length"), ({"init": "random"}, "init"),
                         ({"num_chains": 1}, "num_chains must be >= 2"), ({"pretrain_steps": -1}, "pretrain_steps"),
                         ({"pretrain_lr": 0.0}, "pretrain_lr")]:
        with pytest.raises(ValueError, match=word):
            BatchedHMC(**kwargs)
    BatchedHMC(num_chains=1, adapt_trajectory_length=False)  # one chain is fine with a fixed length
    x = torch.linspace(-1, 1, 10, **tkwargs).unsqueeze(-1)
    model = _tiny_bnn(**tkwargs)  # D = 4 + 4 + 4 + 1 = 13
    with pytest.raises(ValueError, match=r"inverse_mass_matrix must be diagonal.*\[13\] or \[2, 13\].*\[12\]"):
        BatchedHMC(num_chains=2, inverse_mass_matrix=torch.ones(12)).fit(model, x, x[:, 0], progress=False)
    with pytest.raises(ValueError, match=r"inverse_mass_matrix must be dense.*\[13, 13\]"):
        BatchedHMC(num_chains=2, dense_mass=True, inverse_mass_matrix=torch.ones(13)).fit(
            model, x, x[:, 0], progress=False)
    with pytest.raises(ValueError, match="positive"):
        BatchedHMC(num_chains=2, inverse_mass_matrix=-torch.ones(13)).fit(model, x, x[:, 0], progress=False)
    engine = BatchedHMC(num_chains=2, num_warmup=2, num_samples=2)
    with pytest.raises(ValueError, match=r"init must be a tensor of shape \[num_chains=2, D\]"):
        engine.sample(lambda z: -z.pow(2).sum(-1), torch.zeros(3, 2, **tkwargs), progress=False)
    with pytest.raises(ValueError, match=r"log_density must map \[chains, D\] to \[chains\]"):
        engine.sample(lambda z: -z.pow(2).sum(), torch.zeros(2, 2, **tkwargs), progress=False)
    with pytest.raises(TypeError, match="log_density"):
        engine.fit(lambda x, y=None: None, x, x[:, 0], progress=False)


def test_fixed_settings_are_respected(tkwargs):
    # No adaptation: step size, trajectory length and metric are what was given, and the
    # number of leapfrog steps is ceil(u T / step_size) with u the Halton jitter.
    target = GaussianTarget(torch.zeros(2, **tkwargs), torch.eye(2, **tkwargs))
    imm = torch.tensor([[1.0, 2.0], [0.5, 1.0]], **tkwargs)
    engine = BatchedHMC(num_warmup=10, num_samples=8, num_chains=2, step_size=0.25, adapt_step_size=False,
                        trajectory_length=1.0, adapt_trajectory_length=False, adapt_mass_matrix=False,
                        inverse_mass_matrix=imm, seed=0)
    post = engine.sample(_gaussian_log_density(target), torch.zeros(2, 2, **tkwargs), progress=False)
    assert bool((post.stats["step_size"] == 0.25).all())
    torch.testing.assert_close(post.stats["inverse_mass_matrix"], imm)
    from inference.adaptation import halton

    expected = torch.tensor([math.ceil(halton(10 + i) * 1.0 / 0.25) for i in range(8)], device=tkwargs["device"])
    assert torch.equal(post.stats["n_steps"][0], expected)
    no_jitter = BatchedHMC(num_warmup=0, num_samples=4, num_chains=2, step_size=0.25, adapt_step_size=False,
                           trajectory_length=1.0, adapt_trajectory_length=False, jitter=False, seed=0)
    post = no_jitter.sample(_gaussian_log_density(target), torch.zeros(2, 2, **tkwargs), progress=False)
    assert bool((post.stats["n_steps"] == 4).all())


def test_compiled_leapfrog_matches_eager(tkwargs):
    # compile=True traces one leapfrog step (with the vmapped gradient) and compiles it; the
    # compiled step must reproduce the eager one, and a compiled run must be a valid run.
    from inference.hmc import compile_leapfrog_step
    from inference.integrators import leapfrog_step

    x = torch.linspace(-1, 1, 8, **tkwargs).unsqueeze(-1)
    y = x[:, 0] ** 2
    model = BayesianNet(nn.Linear(1, 1).to(**tkwargs), IIDGaussian(1.0), Gaussian(scale=0.5))
    potential = make_potential(model, x, y, gradient="vmap")
    grad_and_value = potential.bind(x, y)
    z = torch.randn(3, potential.view.size, **tkwargs)
    p = torch.randn_like(z)
    h = torch.full((3, 1), 0.1, **tkwargs)
    imm = torch.rand_like(z) + 0.5
    step = compile_leapfrog_step(grad_and_value, z, imm)
    grad = grad_and_value(z)[0]
    for got, want in zip(step(z, p, grad, h, imm), leapfrog_step(z, p, grad, h, imm, grad_and_value)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    post = BatchedHMC(num_warmup=30, num_samples=10, num_chains=3, compile=True, seed=0).fit(
        model, x, y, progress=False)
    assert post["weight"].shape == (3, 10, 1, 1) and post.attrs["compile"] is True
    assert bool(torch.isfinite(post.stats["lp"]).all())


def test_fit_runs_mlps_on_the_batched_matmul_potential(tkwargs, monkeypatch):
    # An MLP BayesianNet is sampled through the "mlp" path of inference.density (eager and
    # compiled); it is the same density, so from the same seed the draws match the vmapped
    # path's up to rounding (float64), and the Posterior is the same contract.
    import inference.density as density

    calls = []
    mlp_layers = density._mlp_layers

    def spy(*args, **kwargs):
        out = mlp_layers(*args, **kwargs)
        calls.append(out is not None)
        return out

    g = torch.Generator(device=tkwargs["device"]).manual_seed(2)
    x = torch.rand(12, 2, generator=g, **tkwargs) * 2 - 1
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(12, generator=g, **tkwargs)
    net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).to(**tkwargs)
    model = BayesianNet(net, IIDGaussian(1.0), Gaussian(scale=0.2))
    settings = {"num_warmup": 20, "num_samples": 8, "num_chains": 3, "seed": 4}
    monkeypatch.setattr(density, "_mlp_layers", spy)
    fast = BatchedHMC(**settings).fit(model, x, y, progress=False)
    compiled = BatchedHMC(**settings, compile=True).fit(model, x, y, progress=False)
    assert calls == [True, True]
    monkeypatch.setattr(density, "_mlp_layers", lambda *args, **kwargs: None)
    vmapped = BatchedHMC(**settings).fit(model, x, y, progress=False)
    assert set(fast.samples) == set(vmapped.samples) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert set(fast.stats) == set(vmapped.stats)
    for other in (vmapped, compiled):
        for name in fast.samples:
            torch.testing.assert_close(fast[name], other[name], rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(fast.stats["lp"], other.stats["lp"], rtol=1e-7, atol=1e-7)
    assert fast["0.weight"].shape == (3, 8, 6, 2)


def test_ascend_finds_each_chains_own_mode(tkwargs):
    # Chain c's log density peaks at mean[c] (rows do not interact). It is -inf left of x0 = -3, where the
    # third chain's peak lies: that chain keeps stepping out and is put back at its best finite point
    # each time, so it ends at the edge, finite and higher than where it started.
    mean = torch.tensor([[1.0, -2.0], [0.5, 0.5], [-3.5, 2.0]], **tkwargs)

    def log_density(z):
        lp = -0.5 * ((z - mean) / torch.tensor([0.3, 2.0], **tkwargs)).square().sum(-1)
        return torch.where(z[:, 0] < -3.0, torch.full_like(lp, -math.inf), lp)

    z0 = torch.tensor([[0.0, 0.0], [3.0, -3.0], [-2.0, 0.0]], **tkwargs)
    vg = autograd_grad_and_value(log_density)
    z = ascend(vg, z0, num_steps=600, lr=0.05)
    torch.testing.assert_close(z[:2], mean[:2], atol=2e-2, rtol=0)
    assert -3.0 <= float(z[2, 0]) < -2.9
    lp = log_density(z)
    assert bool(torch.isfinite(lp).all()) and float(lp[2]) > float(log_density(z0)[2])
    torch.testing.assert_close(ascend(vg, z0, num_steps=0), z0)
    # the same chain alone or in a batch ends at the same point (Adam is elementwise)
    alone = ascend(lambda w: tuple(t[1:2] for t in vg(torch.cat([z0[:1], w, z0[2:]]))), z0[1:2], num_steps=50)
    torch.testing.assert_close(ascend(vg, z0, num_steps=50)[1:2], alone)
    with pytest.raises(ValueError, match="steps"):
        ascend(vg, z0, num_steps=-1)


def test_pretraining_starts_chains_near_a_mode(tkwargs):
    # With no warm-up and one short transition, draws stay near their start: after pre-training the
    # tiny BNN's log joint at the draws is far above that of prior starts, and the setting is recorded.
    x = torch.linspace(-1, 1, 20, **tkwargs).unsqueeze(-1)
    y = torch.sin(3 * x[:, 0])
    common = {"num_warmup": 0, "num_samples": 1, "num_chains": 4, "step_size": 1e-3, "adapt_step_size": False,
              "trajectory_length": 1e-3, "adapt_trajectory_length": False, "seed": 0}
    cold = BatchedHMC(**common).fit(_tiny_bnn(**tkwargs), x, y, progress=False)
    warm = BatchedHMC(**common, pretrain_steps=300, pretrain_lr=0.05).fit(_tiny_bnn(**tkwargs), x, y, progress=False)
    assert bool(warm.stats["lp"].min() > cold.stats["lp"].max() + 10.0)
    assert warm.attrs["pretrain_steps"] == 300 and cold.attrs["pretrain_steps"] == 0
