"""BayesianNet: any nn.Module becomes a Pyro model with a matching fast log-density."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.util import site_is_subsample
from torch import nn

from bayesnets import OBS, BayesianNet, Categorical, Gaussian
from inference import NUTS, SVI
from priors import HierarchicalGaussian, IIDGaussian, LayerwiseGaussian


def _mlp(**tkwargs) -> nn.Module:
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).to(**tkwargs)


def _conv(**tkwargs) -> nn.Module:
    # x: [N, 1, 8] -> conv -> [N, 2, 6] -> flatten -> [N, 12] -> [N, 1]
    return nn.Sequential(nn.Conv1d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 1)).to(**tkwargs)


@pytest.mark.parametrize("prior", [IIDGaussian(0.7), LayerwiseGaussian(1.3, bias_scale=0.5),
                                   HierarchicalGaussian(2.0, 1.5)])
def test_log_density_equals_pyro_potential(prior, tkwargs):
    # The fast path must be exactly minus Pyro's potential energy (same unconstrained
    # space, same Jacobians), for every prior and a latent noise scale.
    x = torch.randn(15, 2, **tkwargs)
    y = torch.randn(15, **tkwargs)
    model = BayesianNet(_mlp(**tkwargs), prior, Gaussian(scale=dist.HalfNormal(1.0)))
    _, potential, _, _ = initialize_model(model, model_args=(x, y))
    for _ in range(3):
        params = model.init_params(x)
        torch.testing.assert_close(model.log_density(params, x, y), -potential(params), rtol=1e-10, atol=1e-10)


def test_sites_and_forward_shapes(tkwargs):
    model = BayesianNet(_mlp(**tkwargs), HierarchicalGaussian(), Gaussian(scale=dist.HalfNormal(1.0)))
    x = torch.randn(5, 2, **tkwargs)
    tr = pyro.poutine.trace(model).get_trace(x)
    names = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
    assert names == [*model.latent_shapes(), OBS]
    assert tr.nodes[OBS]["value"].shape == (5,)
    assert model(x).shape == (5, 1)
    # The wrapped module is never mutated and never enters Pyro's param store.
    assert len(pyro.get_param_store()) == 0


def test_minibatch_rescaling(tkwargs):
    model = BayesianNet(_mlp(**tkwargs), IIDGaussian(), Gaussian(scale=0.3))
    x, y = torch.randn(40, 2, **tkwargs), torch.randn(40, **tkwargs)
    p = model.init_params(x)
    full = model.log_density(p, x, y)
    prior = model.log_prior(model.constrain(p))
    ll_batch = model.log_likelihood(p, x[:10], y[:10]).sum()
    torch.testing.assert_close(model.log_density(p, x[:10], y[:10], num_data=40), prior + 4 * ll_batch)
    assert not torch.equal(full, model.log_density(p, x[:10], y[:10], num_data=40))


def test_predict_is_vectorised_and_equals_a_loop(tkwargs):
    model = BayesianNet(_conv(**tkwargs), LayerwiseGaussian(), Gaussian(scale=0.1))
    x = torch.randn(7, 1, 8, **tkwargs)
    draws = model.sample_prior(x, (5,))
    f = model.predict_f(draws, x, chunk_size=2)
    assert f.shape == (5, 7, 1)
    for i in range(5):
        torch.testing.assert_close(f[i], model.forward_f({n: v[i] for n, v in draws.items()}, x))


@pytest.mark.filterwarnings("ignore:.*divergent transition")  # 15 warm-up steps: expected
def test_conv_bnn_end_to_end_nuts_and_svi(tkwargs):
    net = _conv(**tkwargs)
    model = BayesianNet(net, LayerwiseGaussian(), Gaussian(scale=dist.HalfNormal(1.0)))
    x = torch.randn(12, 1, 8, **tkwargs)
    y = x.mean((1, 2)) + 0.1 * torch.randn(12, **tkwargs)
    before = {n: p.clone() for n, p in net.named_parameters()}
    post = NUTS(num_warmup=15, num_samples=10, num_chains=1, max_tree_depth=4, seed=0).fit(model, x, y,
                                                                                          progress=False)
    vi = SVI(num_steps=30, num_samples=10, seed=0).fit(model, x, y, progress=False)
    for p in (post, vi):
        assert p["0.weight"].shape == (1, 10, 2, 1, 3)
        pred = p.predict(x[:4])
        assert pred.f.shape == (1, 10, 4, 1) and pred.y.shape == (1, 10, 4)
        assert torch.isfinite(pred.y).all()
        assert p.log_likelihood().shape == (1, 10, 12)
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters())


def test_classification_model(tkwargs):
    net = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 3)).to(**tkwargs)
    model = BayesianNet(net, IIDGaussian(), Categorical(3))
    x = torch.randn(20, 2, **tkwargs)
    y = torch.randint(0, 3, (20,), device=x.device)
    post = SVI(num_steps=20, num_samples=8, seed=0).fit(model, x, y, progress=False)
    pred = post.predict(x)
    assert pred.f.shape == (1, 8, 20, 3) and pred.y.shape == (1, 8, 20)
    assert post.log_likelihood().shape == (1, 8, 20)


# ------------------------------------------------------------------ bad input
def _model(**tkwargs) -> BayesianNet:
    return BayesianNet(_mlp(**tkwargs), IIDGaussian(), Gaussian(scale=0.1))


def test_mismatched_lengths(tkwargs):
    with pytest.raises(ValueError, match="y"):
        _model(**tkwargs).check_data(torch.randn(5, 2, **tkwargs), torch.randn(4, **tkwargs))


def test_nan_in_y(tkwargs):
    y = torch.randn(5, **tkwargs)
    y[2] = float("nan")
    with pytest.raises(ValueError, match="y contains NaN"):
        NUTS(num_samples=2).fit(_model(**tkwargs), torch.randn(5, 2, **tkwargs), y, progress=False)


def test_wrong_rank_x(tkwargs):
    with pytest.raises(ValueError, match="x must have shape"):
        SVI(num_steps=2).fit(_model(**tkwargs), torch.randn(5, **tkwargs), torch.randn(5, **tkwargs),
                             progress=False)


def test_wrong_feature_count(tkwargs):
    with pytest.raises(ValueError, match="x of shape"):
        _model(**tkwargs).check_data(torch.randn(5, 3, **tkwargs), torch.randn(5, **tkwargs))


def test_empty_dataset(tkwargs):
    with pytest.raises(ValueError, match="x is empty"):
        _model(**tkwargs).check_data(torch.randn(0, 2, **tkwargs), torch.randn(0, **tkwargs))


def test_module_without_parameters():
    with pytest.raises(ValueError, match="module"):
        BayesianNet(nn.Tanh(), IIDGaussian(), Gaussian(scale=0.1))


def test_wrong_output_width(tkwargs):
    net = nn.Linear(2, 3).to(**tkwargs)
    with pytest.raises(ValueError, match="module output"):
        BayesianNet(net, IIDGaussian(), Gaussian(scale=0.1)).check_data(torch.randn(4, 2, **tkwargs))


def test_device_mismatch_is_explained(tkwargs):
    if tkwargs["device"].type != "cuda":
        pytest.skip("needs a CUDA device to create a mismatch")
    model = BayesianNet(_mlp(dtype=torch.float64), IIDGaussian(), Gaussian(scale=0.1))
    with pytest.raises(ValueError, match=r"model.to\(x.device\)"):
        model.check_data(torch.randn(4, 2, **tkwargs))


def test_reused_prior_with_other_shapes(tkwargs):
    prior = IIDGaussian()
    BayesianNet(_mlp(**tkwargs), prior, Gaussian(scale=0.1))
    with pytest.raises(ValueError, match="already bound"):
        BayesianNet(nn.Linear(3, 1), prior, Gaussian(scale=0.1))
