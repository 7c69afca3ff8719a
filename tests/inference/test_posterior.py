"""Posterior: ArviZ conversion, save/load round trip, predictions."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from bayesnets import BayesianNet, Gaussian
from inference import NUTS, Posterior
from inference.posterior import import_arviz
from priors import IIDGaussian

az = import_arviz()


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    x = torch.randn(25, 2, dtype=torch.float64)
    y = x.sum(-1) + 0.3 * torch.randn(25, dtype=torch.float64)
    model = BayesianNet(nn.Linear(2, 1).double(), IIDGaussian(1.0), Gaussian(scale=0.3))
    return NUTS(num_warmup=100, num_samples=100, num_chains=2, seed=0).fit(model, x, y, progress=False)


def _moved(post: Posterior, device: torch.device) -> Posterior:
    post.model.to(device)
    x, y = post.data
    return Posterior({n: v.to(device) for n, v in post.samples.items()},
                     {n: v.to(device) for n, v in post.stats.items()}, model=post.model,
                     data=(x.to(device), y.to(device)), attrs=post.attrs)


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")  # 200 draws only
def test_to_arviz_groups_and_functions(fitted, device):
    post = _moved(fitted, device)
    idata = post.to_arviz(posterior_predictive=True)
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive", "observed_data"):
        assert hasattr(idata, group), group
    assert idata.log_likelihood["obs"].shape == (2, 100, 25)
    assert idata.posterior_predictive["obs"].shape == (2, 100, 25)
    assert idata.sample_stats["diverging"].dtype == bool
    table = az.summary(idata)
    assert {"mean", "sd", "r_hat", "ess_bulk"} <= set(table.columns)
    assert len(table) == 3  # weight[0,0], weight[0,1], bias[0]
    assert az.rhat(idata)["weight"].shape == (1, 2)
    assert az.ess(idata)["bias"].shape == (1,)
    loo = az.loo(idata)
    assert loo.n_data_points == 25
    axes = az.plot_trace(idata, var_names=["bias"])
    assert axes.shape == (1, 2)
    plt.close("all")


def test_log_likelihood_matches_model(fitted):
    ll = fitted.log_likelihood()
    x, y = fitted.data
    i, j = 1, 37
    draw = {n: v[i, j] for n, v in fitted.samples.items()}
    torch.testing.assert_close(ll[i, j], fitted.model.log_likelihood(draw, x, y))


def test_save_load_round_trip_is_exact(fitted, tmp_path):
    path = tmp_path / "post.safetensors"
    fitted.save(path)
    back = Posterior.load(path, model=fitted.model)
    assert list(back.samples) == list(fitted.samples) and list(back.stats) == list(fitted.stats)
    for n in fitted.samples:
        assert torch.equal(back.samples[n], fitted.samples[n].cpu())
        assert back.samples[n].dtype == fitted.samples[n].dtype
    for n in fitted.stats:
        assert torch.equal(back.stats[n], fitted.stats[n].cpu())
    assert torch.equal(back.data[0], fitted.data[0].cpu()) and torch.equal(back.data[1], fitted.data[1].cpu())
    assert back.attrs == fitted.attrs
    torch.testing.assert_close(back.log_likelihood(), fitted.log_likelihood().cpu())


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a bayesnets posterior"):
        Posterior.load(path)


def test_prediction_summaries(fitted):
    x = torch.randn(6, 2, dtype=torch.float64)
    pred = fitted.predict(x)
    assert pred.f.shape == (2, 100, 6, 1)
    assert pred.mean().shape == (6, 1)
    assert pred.quantile([0.05, 0.95]).shape == (2, 6)
    lo, hi = pred.quantile([0.05, 0.95])
    assert bool((lo < hi).all())


def test_posterior_validates_shapes():
    with pytest.raises(ValueError, match="chain"):
        Posterior({"a": torch.zeros(2, 3), "b": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="needs the model"):
        Posterior({"a": torch.zeros(2, 3)}).predict(torch.zeros(1, 1))
