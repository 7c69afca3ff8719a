"""The common BoTorch contract, run over every registered surrogate, and the registry's errors."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from botorch.acquisition import qLogExpectedImprovement, qLogNoisyExpectedImprovement, qUpperConfidenceBound
from botorch.acquisition.multi_objective import qExpectedHypervolumeImprovement
from botorch.utils.multi_objective.box_decompositions import FastNondominatedPartitioning

from bayesnets.surrogates import SURROGATES, make_surrogate

NAMES = list(SURROGATES)


def test_registry_names_are_the_briefs(fast):
    assert set(SURROGATES) == {"gp", "gp_legacy", "ibnn", "hmc", "nuts", "sghmc", "svi", "ensemble", "dkl", "tprocess",
                              "pfn"}
    assert set(fast) == set(SURROGATES)


def test_unknown_name_lists_the_valid_ones(tkwargs):
    X = torch.rand(5, 2, **tkwargs)
    with pytest.raises(ValueError, match="valid names: gp, gp_legacy, ibnn"):
        make_surrogate("laplace", X, X[:, :1])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract(name, dtype, device, fit):
    model = fit(name, dtype, device)
    X = torch.rand(3, 2, 2, dtype=dtype, device=device)  # b x q x d
    post = model.posterior(X)
    assert post.mean.shape == (3, 2, 1) and post.variance.shape == (3, 2, 1)
    assert post.mean.dtype == dtype and post.mean.device.type == device.type
    assert bool((post.variance > 0).all())
    assert model.posterior(X[0]).mean.shape == (2, 1)
    assert post.rsample(torch.Size([4])).shape == (4, 3, 2, 1)
    # qLogEI gradients w.r.t. the candidates are finite (and not all zero)
    Xg = X.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = qLogExpectedImprovement(model, best_f=0.5)(Xg)
        value.sum().backward()
    assert value.shape == (3,) and bool(torch.isfinite(value).all())
    assert bool(torch.isfinite(Xg.grad).all()) and bool((Xg.grad != 0).any())
    # the other MC acquisitions run on the same posterior
    assert torch.isfinite(qUpperConfidenceBound(model, beta=2.0)(X)).all()
    baseline = torch.rand(4, 2, dtype=dtype, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.isfinite(qLogNoisyExpectedImprovement(model, X_baseline=baseline, prune_baseline=False)(X)).all()


@pytest.mark.parametrize("name", NAMES)
def test_to_device_moves_the_model(name, device, fit):
    model = fit(name, torch.float64, torch.device("cpu"))

    moved = copy.deepcopy(model).to(device)
    X = torch.rand(2, 2, dtype=torch.float64)
    want = model.posterior(X).mean.detach()
    got = moved.posterior(X.to(device)).mean.detach()
    assert got.device.type == device.type
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_one_dimensional_fit(name, tkwargs, fast, objective):
    """Mean near the data, and more spread away from it than at it.

    Data on [0, 0.5] of the unit interval; "away" is x = 1 (half a period beyond the data).
    """
    X = torch.linspace(0, 0.5, 10, **tkwargs).unsqueeze(-1)
    Y = objective(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_surrogate(name, X, Y, seed=0, **fast[name])
    post = model.posterior(X)
    rmse = (post.mean - Y).square().mean().sqrt()
    assert rmse < 0.35 * Y.std(), f"{name}: training RMSE {rmse:.3f} vs std(y) {Y.std():.3f}"
    var_at_data = post.variance.mean()
    var_away = model.posterior(torch.ones(1, 1, **tkwargs)).variance.squeeze()
    assert var_away > var_at_data, f"{name}: variance {var_away:.3g} away vs {var_at_data:.3g} at the data"


@pytest.mark.parametrize("name", ["ensemble", "ibnn", "hmc"])
def test_multi_output_qehvi(name, device, fit):
    model = fit(name, torch.float64, device, m=2)
    X = torch.rand(3, 2, 2, dtype=torch.float64, device=device)
    assert model.posterior(X).mean.shape == (3, 2, 2)
    train_Y = model.posterior(torch.rand(6, 2, dtype=torch.float64, device=device)).mean.detach()
    ref = train_Y.min(0).values - 0.1
    acqf = qExpectedHypervolumeImprovement(model, ref_point=ref.tolist(),
                                           partitioning=FastNondominatedPartitioning(ref_point=ref, Y=train_Y))
    Xg = X.clone().requires_grad_(True)
    value = acqf(Xg)
    value.sum().backward()
    assert value.shape == (3,) and bool(torch.isfinite(value).all()) and bool(torch.isfinite(Xg.grad).all())


@pytest.mark.parametrize("name", ["tprocess", "pfn", "dkl"])
def test_multi_output_posterior_shapes(name, device, fit):
    model = fit(name, torch.float64, device, m=2)
    post = model.posterior(torch.rand(3, 2, 2, dtype=torch.float64, device=device))
    assert post.mean.shape == (3, 2, 2)
    assert post.rsample(torch.Size([4])).shape == (4, 3, 2, 2)


@pytest.mark.parametrize("bad, match", [
    (lambda X, Y: (X, Y.squeeze(-1)), "train_Y must be 2-D"),
    (lambda X, Y: (X, Y[:-1]), "train_Y must have one row per row of train_X"),
    (lambda X, Y: (X, torch.where(torch.arange(len(Y)).unsqueeze(-1) == 2, float("nan"), Y)), "train_Y contains NaN"),
    (lambda X, Y: (X.unsqueeze(0), Y), "train_X must be 2-D"),
    (lambda X, Y: (X.long(), Y), "train_X must be floating point"),
])
@pytest.mark.parametrize("name", ["gp", "hmc", "ibnn"])
def test_bad_training_data_names_the_argument(name, bad, match, tkwargs, objective):
    X = torch.rand(6, 2, **tkwargs)
    Y = objective(X)
    X, Y = bad(X, Y)
    with pytest.raises((ValueError, TypeError), match=match):
        make_surrogate(name, X, Y)
