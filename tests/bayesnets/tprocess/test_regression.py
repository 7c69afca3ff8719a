"""NNGP / Student-t / Burr-XII process regression: closed forms against scipy, limits, fitting, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from botorch.models.transforms.outcome import Standardize
from scipy import stats

from bayesnets.tprocess.posterior import ScaleMixturePosterior
from bayesnets.tprocess.regression import (
    MIN_NOISE,
    BurrXIIRegression,
    MarginalLikelihoodFit,
    MarginalLikelihoodTrainer,
    NNGPRegression,
    TProcessRegression,
    fit_marginal_likelihood,
    synthetic_regression,
)
from priors.kernels import NNGPKernel


def _kernel(tkwargs: dict) -> NNGPKernel:
    return NNGPKernel(depth=2, activation="relu", weight_variance=1.5, bias_variance=0.2).to(**tkwargs)


def _data(tkwargs: dict, n: int = 15, d: int = 2):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = torch.sin(2 * X[:, :1]) + 0.2 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return X.to(**tkwargs), Y.to(**tkwargs)


def _joint_scale(model, X: torch.Tensor, Xt: torch.Tensor, observation_noise: bool) -> np.ndarray:
    """Unit-scale covariance of ``(y, f*)`` (or ``(y, y*)``) built from kernel blocks, as numpy."""
    k = model.kernel
    eps = model.noise.item()
    Kxx = k(X, X).to_dense() + eps * torch.eye(len(X), dtype=X.dtype, device=X.device)
    Kxt = k(X, Xt).to_dense()
    eye_t = torch.eye(len(Xt), dtype=X.dtype, device=X.device)
    Ktt = k(Xt, Xt).to_dense() + (eps if observation_noise else 0.0) * eye_t
    return torch.cat([torch.cat([Kxx, Kxt], 1), torch.cat([Kxt.mT, Ktt], 1)], 0).detach().cpu().numpy()


# ---------------------------------------------------------------------- closed forms against scipy
@pytest.mark.parametrize("observation_noise", [False, True])
def test_t_predictive_equals_scipy_conditional(observation_noise: bool, tkwargs: dict) -> None:
    """p(f* | y) = t_joint(y, f*) / t(y) with scipy's multivariate t, for a q-batch and per point."""
    X, Y = _data(tkwargs)
    alpha, beta = 1.3, 0.8
    model = TProcessRegression(X, Y, kernel=_kernel(tkwargs), alpha=alpha, beta=beta, noise=0.05).eval()
    Xt = torch.randn(3, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64).to(**tkwargs)
    post = model.posterior(Xt, observation_noise=observation_noise)
    assert isinstance(post, ScaleMixturePosterior)
    n, y = len(X), Y.squeeze(-1).cpu().numpy()
    S = beta / alpha * _joint_scale(model, X, Xt, observation_noise)
    df = 2 * alpha
    log_py = stats.multivariate_t(np.zeros(n), S[:n, :n], df=df).logpdf(y)
    # our predictive as a density: t_{2a'}(loc, (b'/a') cov) from the posterior's parameters
    a_post, b_post = post.mixing.concentration.item(), post.mixing.rate.item()
    assert 2 * a_post == pytest.approx(2 * alpha + n)  # dof 2α + n
    loc = post.loc.detach().cpu().numpy()
    ours = stats.multivariate_t(loc, b_post / a_post * post.covariance.detach().cpu().numpy(), df=2 * a_post)
    sd = np.sqrt(np.diag(ours.shape))
    for shift in (np.zeros(3), np.array([1.0, -2.0, 0.5]), np.array([4.0, 3.0, -6.0])):
        f = loc + shift * sd
        ref = stats.multivariate_t(np.zeros(n + 3), S, df=df).logpdf(np.concatenate([y, f])) - log_py
        assert ours.logpdf(f) == pytest.approx(ref, rel=1e-9, abs=1e-9)
        # one point at a time: the marginal densities of the posterior object
        marg = post.marginal_log_prob(torch.as_tensor(f, **tkwargs).unsqueeze(-1)).squeeze(-1)
        for j in range(3):
            idx = [*range(n), n + j]
            ref_j = stats.multivariate_t(np.zeros(n + 1), S[np.ix_(idx, idx)], df=df).logpdf(
                np.concatenate([y, f[j:j + 1]])) - log_py
            assert marg[j].item() == pytest.approx(ref_j, rel=1e-9, abs=1e-9)


def test_nngp_predictive_equals_scipy_conditional(tkwargs: dict) -> None:
    X, Y = _data(tkwargs)
    model = NNGPRegression(X, Y, kernel=_kernel(tkwargs), scale=0.7, noise=0.05).eval()
    Xt = torch.randn(3, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64).to(**tkwargs)
    post = model.posterior(Xt)
    n, y = len(X), Y.squeeze(-1).cpu().numpy()
    S = 0.7 * _joint_scale(model, X, Xt, False)
    mean = S[n:, :n] @ np.linalg.solve(S[:n, :n], y)
    cov = S[n:, n:] - S[n:, :n] @ np.linalg.solve(S[:n, :n], S[:n, n:])
    np.testing.assert_allclose(post.mean.squeeze(-1).detach().cpu().numpy(), mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(post.mvn.covariance_matrix.detach().cpu().numpy(), cov, rtol=1e-9, atol=1e-12)


def test_log_marginal_likelihood_matches_scipy(tkwargs: dict) -> None:
    X, Y = _data(tkwargs)
    y = Y.squeeze(-1).cpu().numpy()
    t = TProcessRegression(X, Y, kernel=_kernel(tkwargs), alpha=2.2, beta=1.1, noise=0.03)
    C = t.process.covariance(t.train_X, t.noise).detach().cpu().numpy()
    ref = stats.multivariate_t(np.zeros(len(y)), 1.1 / 2.2 * C, df=4.4).logpdf(y)
    assert t.log_marginal_likelihood().item() == pytest.approx(ref, rel=1e-12)
    g = NNGPRegression(X, Y, kernel=_kernel(tkwargs), scale=0.4, noise=0.03)
    ref = stats.multivariate_normal(np.zeros(len(y)), 0.4 * C).logpdf(y)
    assert g.log_marginal_likelihood().item() == pytest.approx(ref, rel=1e-12)


def test_t_process_tends_to_the_nngp_as_alpha_grows(tkwargs: dict) -> None:
    """alpha -> inf with beta/alpha = c fixed: predictive densities and evidence converge at rate O(1/alpha)."""
    X, Y = _data(tkwargs)
    c, kernel = 0.7, _kernel(tkwargs)
    Xt = torch.randn(20, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(**tkwargs)
    Yt = torch.sin(2 * Xt[:, :1]) + 1.5  # a shifted target: the tails matter
    gauss = NNGPRegression(X, Y, kernel=kernel, scale=c, noise=0.05).eval()
    ref_lp, ref_lml = gauss.predictive_log_prob(Xt, Yt), gauss.log_marginal_likelihood()
    errors = []
    for alpha in (1e4, 1e6, 1e8):
        t = TProcessRegression(X, Y, kernel=kernel, alpha=alpha, beta=c * alpha, noise=0.05).eval()
        torch.testing.assert_close(t.posterior(Xt).mean, gauss.posterior(Xt).mean)  # same mean at every alpha
        err = (t.predictive_log_prob(Xt, Yt) - ref_lp).abs().max().item()
        errors.append(max(err, abs((t.log_marginal_likelihood() - ref_lml).item())))
    # each hundredfold alpha must cut the error at least fiftyfold (O(1/alpha) gives a hundredfold)
    assert errors[0] > 50 * errors[1] > 2500 * errors[2] and errors[2] < 1e-4


# ---------------------------------------------------------------------- heavy tails pay off
def test_t_process_beats_nngp_under_cauchy_noise(tkwargs: dict) -> None:
    """The paper's Synthetic B (GP + 0.8 x Cauchy noise), both models fitted by marginal likelihood.

    40 training points per seed (t predictive dof 2α + n = 42), the 260 others for testing, seeds
    0..5 fixed in advance. Where the test noise is benign the t-process costs ~0.005 nats per point
    (measured: its predictive is a little wider), but each Cauchy outlier z predictive sds out costs
    the NNGP z²/2 against the t's (ν'+1)/2·log(1 + z²/ν'); pooled over 1560 test points the t must
    win by at least 0.1 nats, a third of the paper's 0.29 (arXiv 2107.01408, Synthetic B).
    """
    nll = {"nngp": [], "t": []}
    for seed in range(6):
        X, Y = (v.to(**tkwargs) for v in synthetic_regression("cauchy", seed=seed))
        perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed)).to(tkwargs["device"])
        tr, te = perm[:40], perm[40:]
        xm, xs, ym, ys = X[tr].mean(0), X[tr].std(0), Y[tr].mean(), Y[tr].std()
        Xtr, Ytr, Xte, Yte = (X[tr] - xm) / xs, (Y[tr] - ym) / ys, (X[te] - xm) / xs, (Y[te] - ym) / ys
        models = {"nngp": NNGPRegression(Xtr, Ytr), "t": TProcessRegression(Xtr, Ytr, alpha=1.0, beta=1.0)}
        for name, model in models.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # jitter while exploring is fine here
                fit_marginal_likelihood(model, num_steps=50)
            nll[name].append(model.predictive_nll(Xte, Yte).item())
    gap = np.mean(nll["nngp"]) - np.mean(nll["t"])
    assert gap > 0.1, (nll, gap)


# ---------------------------------------------------------------------- fitting and transforms
def test_fit_increases_evidence_and_respects_fixed_alpha(tkwargs: dict) -> None:
    X, Y = _data(tkwargs, n=30)
    model = TProcessRegression(X, Y, alpha=2.0, beta=2.0, noise=0.5)
    before = model.log_marginal_likelihood().item()
    fit = fit_marginal_likelihood(model, num_steps=40)
    after = model.log_marginal_likelihood().item()
    assert isinstance(fit, MarginalLikelihoodFit) and fit.module is model
    assert after > before + 1.0 and fit.history["loss"].min().item() == pytest.approx(-after / 30, rel=1e-6)
    assert fit.attrs["best_loss"] == fit.history["loss"].min().item()
    assert fit.attrs["evaluations"] == len(fit.history["loss"]) and not fit.stopped_early
    assert model.alpha.item() == pytest.approx(2.0) and model.beta.item() != pytest.approx(2.0)
    assert not model.training


def test_fit_stops_at_an_unusable_point_and_keeps_the_best(tkwargs: dict) -> None:
    X, Y = _data(tkwargs, n=20)

    class Failing(NNGPRegression):
        calls = 0

        def log_marginal_likelihood(self) -> torch.Tensor:
            Failing.calls += 1
            if Failing.calls > 6:
                raise ValueError("the training covariance is not positive definite")
            return super().log_marginal_likelihood()

    model = Failing(X, Y, noise=0.5)
    with pytest.warns(RuntimeWarning, match="stopped early"):
        fit = fit_marginal_likelihood(model, num_steps=50, optimizer="adam", lr=0.1)
    assert fit.stopped_early and fit.history["loss"].shape == (6,)
    assert "not positive definite" in fit.attrs["stop_reason"]
    Failing.calls = -1000
    assert model.log_marginal_likelihood().item() == pytest.approx(-fit.history["loss"].min().item() * 20, rel=1e-9)


def test_old_dict_access_still_works_with_a_deprecation_warning(tkwargs: dict) -> None:
    X, Y = _data(tkwargs)
    fit = fit_marginal_likelihood(NNGPRegression(X, Y, kernel=_kernel(tkwargs)), num_steps=3, optimizer="adam")
    with pytest.warns(DeprecationWarning, match=r"fit\.history\[\"loss\"\]"):
        loss = fit["loss"]
    assert loss == fit.history["loss"].tolist() and len(loss) == 4  # every step's start point, then the last
    with pytest.warns(DeprecationWarning, match="jitter_warnings"):
        assert fit["jitter_warnings"] == fit.jitter_warnings == 0
    with pytest.warns(DeprecationWarning, match="stopped_early"):
        assert fit["stopped_early"] is fit.stopped_early is False
    with pytest.raises(KeyError):
        fit["elbo"]


def test_trainer_is_fit_marginal_likelihood(tkwargs: dict) -> None:
    X, Y = _data(tkwargs)
    for optimizer in ("lbfgs", "adam"):
        a, b = (TProcessRegression(X, Y, kernel=_kernel(tkwargs)) for _ in range(2))
        old = fit_marginal_likelihood(a, num_steps=8, optimizer=optimizer)
        calls: list[int] = []
        new = MarginalLikelihoodTrainer(8, optimizer=optimizer, callback=lambda s, m, calls=calls: calls.append(s)).fit(
            b, progress=False)
        assert torch.equal(old.history["loss"], new.history["loss"])
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        # L-BFGS reports every evaluation of its line searches, Adam every step
        assert calls == list(range(1, len(new.history["loss"]) + (optimizer == "lbfgs")))
        assert new.attrs["trainer"] == "MarginalLikelihoodTrainer" and new.attrs["optimizer"] == optimizer


def _ml2_case():
    from tests.inference.training import test_trainer_contract as contract

    def model(tkwargs: dict) -> NNGPRegression:
        return NNGPRegression(*_data(tkwargs), kernel=_kernel(tkwargs))

    trainer = lambda **kw: MarginalLikelihoodTrainer(**{"num_steps": contract.NUM_STEPS, "optimizer": "adam",  # noqa: E731
                                                        "lr": 0.05, "seed": 3, **kw})
    return contract, contract.Case(trainer, model, lambda tk: None, fit_class=MarginalLikelihoodFit)


def test_trainer_contract(tkwargs: dict, tmp_path, capfd) -> None:
    """Resume, save/load, silence and settings as for every trainer. Two contract tests do not
    apply: ML-II draws nothing at random (another seed gives the same fit), and an unusable point
    (a poisoned parameter, K + εI without a factor) ends the fit early with the best point kept and
    a warning, where other trainers raise FloatingPointError. Its history holds every evaluation
    (each Adam step's start point, then the last point): ``num_steps + 1``."""
    contract, case = _ml2_case()
    contract.test_resume_after_an_interruption_is_bit_exact(case, tkwargs, tmp_path)
    contract.test_fit_save_load_round_trip(case, tkwargs, tmp_path)
    contract.test_progress_false_prints_nothing(case, tkwargs, capfd)
    contract.test_bad_settings_name_the_argument(case)
    model, fit = contract._fit(case, tkwargs)
    assert fit.history["loss"].shape == (contract.NUM_STEPS + 1,) and fit.attrs["seed"] == 3
    assert fit.attrs["num_steps"] == contract.NUM_STEPS and fit.attrs["seconds"] > 0
    state = torch.get_rng_state()
    _, again = contract._fit(case, tkwargs, seed=12345)
    assert torch.equal(state, torch.get_rng_state()) and torch.equal(fit.history["loss"], again.history["loss"])

    def poison(step: int, metrics: dict) -> None:
        if step == 1:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(math.nan)

    model = case.model(tkwargs)
    start = [p.detach().clone() for p in model.parameters()]
    with pytest.warns(RuntimeWarning, match="stopped early.*non-finite entries"):
        fit = case.trainer(callback=poison).fit(model, progress=False)
    # step 1 evaluated the start, step 2 found NaN: the start is the best point seen, and is restored
    assert fit.stopped_early and fit.history["loss"].shape == (1,)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), start))


def test_trainer_refuses_what_it_cannot_do(tkwargs: dict, tmp_path) -> None:
    model = NNGPRegression(*_data(tkwargs), kernel=_kernel(tkwargs))
    with pytest.raises(ValueError, match="checkpoint_path: not available with optimizer='lbfgs'"):
        MarginalLikelihoodTrainer(5, checkpoint_path=tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="schedule, clip"):
        MarginalLikelihoodTrainer(5, schedule="cosine", clip=1.0)
    with pytest.raises(ValueError, match="batch_size must be None"):
        MarginalLikelihoodTrainer(5, optimizer="adam", batch_size=4)
    with pytest.raises(TypeError, match="data must be None"):
        MarginalLikelihoodTrainer(5).fit(model, (model.train_X, model.train_Y))
    with pytest.raises(TypeError, match="ScaleMixtureRegression"):
        MarginalLikelihoodTrainer(5).fit(torch.nn.Linear(2, 1))
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad"):
        fit_marginal_likelihood(model)


def test_fitting_alpha_drifts_towards_the_gaussian(tkwargs: dict) -> None:
    """The documented caveat: evidence(α) never beats the best fixed scale, so fitting α increases it."""
    X, Y = _data(tkwargs, n=30)
    model = TProcessRegression(X, Y, kernel=_kernel(tkwargs), alpha=1.0, beta=1.0, noise=0.05, learn_alpha=True)
    model.kernel.requires_grad_(False)
    fit_marginal_likelihood(model, num_steps=60)
    assert model.alpha.item() > 10.0
    gauss = NNGPRegression(X, Y, kernel=model.kernel, noise=model.noise.item())
    fit_marginal_likelihood(gauss, num_steps=60)
    assert model.log_marginal_likelihood().item() < gauss.log_marginal_likelihood().item()


def test_standardize_outcome_transform(tkwargs: dict) -> None:
    X, Y = _data(tkwargs)
    Y = 3.0 * Y + 10.0
    Xt = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(**tkwargs)
    Yt = 3.0 * torch.sin(2 * Xt[:, :1]) + 10.0
    mean, std = Y.mean(), Y.std()
    for cls in (TProcessRegression, NNGPRegression):
        wrapped = cls(X, Y, kernel=_kernel(tkwargs), outcome_transform=Standardize(m=1)).eval()
        manual = cls(X, (Y - mean) / std, kernel=_kernel(tkwargs)).eval()
        pw, pm = wrapped.posterior(Xt), manual.posterior(Xt)
        torch.testing.assert_close(pw.mean, pm.mean * std + mean)
        torch.testing.assert_close(pw.variance, pm.variance * std**2)
        torch.testing.assert_close(wrapped.predictive_log_prob(Xt, Yt),
                                   manual.predictive_log_prob(Xt, (Yt - mean) / std) - std.log())


def test_eval_cache_follows_hyperparameters(tkwargs: dict) -> None:
    X, Y = _data(tkwargs)
    model = TProcessRegression(X, Y, kernel=_kernel(tkwargs)).eval()
    before = model.posterior(X[:3]).variance
    assert model.condition() is model.condition()  # cached while nothing changes
    model.kernel.weight_variance = 3.0
    fresh = TProcessRegression(X, Y, kernel=model.kernel).eval()
    torch.testing.assert_close(model.posterior(X[:3]).variance, fresh.posterior(X[:3]).variance)
    assert not torch.allclose(before, fresh.posterior(X[:3]).variance)


def test_burr_regression_fits_and_predicts(tkwargs: dict) -> None:
    X, Y = _data(tkwargs, n=30)
    model = BurrXIIRegression(X, Y, c=2.0, d=1.0)
    fit_marginal_likelihood(model, num_steps=30)
    post = model.posterior(X[:4])
    assert isinstance(post, ScaleMixturePosterior) and post.rsample(torch.Size([3])).shape == (3, 4, 1)
    # the importance weights are healthy at the fit (the default proposal tracks the likelihood)
    assert model.effective_sample_size.item() > 100
    assert torch.isfinite(model.predictive_log_prob(X, Y)).all()


def test_duplicated_inputs_warn_with_jitter(tkwargs: dict) -> None:
    X, Y = _data(tkwargs, n=8)
    X, Y = torch.cat([X, X]), torch.cat([Y, Y])
    kernel = _kernel(tkwargs)
    kernel.weight_variance = 1e4  # K ~ 1e12: noise at its floor (1e-6) is below K's rounding error
    model = TProcessRegression(X, Y, kernel=kernel, noise=MIN_NOISE)
    with pytest.warns(RuntimeWarning, match="jitter"):
        lml = model.log_marginal_likelihood()
    assert math.isfinite(lml.item())


def test_synthetic_regression_is_seeded() -> None:
    X, Y = synthetic_regression("gaussian", seed=5)
    assert X.shape == (100, 1) and Y.shape == (100, 1)
    torch.testing.assert_close(synthetic_regression("gaussian", seed=5)[1], Y)
    assert synthetic_regression("cauchy")[0].shape == (300, 1)
    with pytest.raises(ValueError, match="noise must be one of"):
        synthetic_regression("laplace")


# ---------------------------------------------------------------------- bad input
def test_bad_input_raises(tkwargs: dict) -> None:
    X, Y = _data(tkwargs)
    with pytest.raises(ValueError, match="alpha must be positive"):
        TProcessRegression(X, Y, alpha=0.0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        TProcessRegression(X, Y, alpha=-1.0)
    with pytest.raises(ValueError, match="beta must be positive"):
        TProcessRegression(X, Y, beta=0.0)
    with pytest.raises(ValueError, match=r"train_Y must have shape \[n, 1\]"):
        TProcessRegression(X, Y[:-1])
    with pytest.raises(ValueError, match=r"train_Y must have shape \[n, 1\].*unsqueeze"):
        TProcessRegression(X, Y.squeeze(-1))
    with pytest.raises(ValueError, match=r"train_X must be a floating \[n, d\]"):
        NNGPRegression(X[0], Y)
    Y_nan = Y.clone()
    Y_nan[3] = math.nan
    with pytest.raises(ValueError, match="train_Y has NaN"):
        TProcessRegression(X, Y_nan)
    X_inf = X.clone()
    X_inf[0, 0] = math.inf
    with pytest.raises(ValueError, match="train_X has NaN"):
        BurrXIIRegression(X_inf, Y)
    with pytest.raises(ValueError, match="noise must be"):
        TProcessRegression(X, Y, noise=1e-9)
    model = TProcessRegression(X, Y).eval()
    with pytest.raises(ValueError, match=r"X must have shape \[\*batch, q, d\] with d = 2"):
        model.posterior(torch.randn(4, 3, **tkwargs))
    with pytest.raises(ValueError, match="output_indices"):
        model.posterior(X, output_indices=[1])
    with pytest.raises(ValueError, match="X has NaN"):
        model.posterior(torch.full((2, 2), math.nan, **tkwargs))
    with pytest.raises(ValueError, match="optimizer"):
        fit_marginal_likelihood(model, optimizer="sgd")
