"""The model-to-density adapter: flat views, and the Potential's three paths (MLP batched matmuls,
vmapped log_density, Pyro trace) and two gradient modes against per-chain autograd; the
deprecated inference.flat names."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import inference.density as density
from bayesnets import BayesianNet, Gaussian
from inference.density import FlatView, autograd_grad_and_value, make_potential
from priors import HierarchicalGaussian, IIDGaussian, LayerwiseGaussian


def test_ravel_unravel_round_trip(tkwargs):
    view = FlatView({"a": torch.Size([2, 3]), "b": torch.Size([]), "c": torch.Size([4])})
    assert view.size == 11
    params = {"a": torch.randn(5, 2, 3, **tkwargs), "b": torch.randn(5, **tkwargs), "c": torch.randn(5, 4, **tkwargs)}
    flat = view.ravel(params)
    assert flat.shape == (5, 11)
    back = view.unravel(flat)
    assert all(torch.equal(back[k], params[k]) for k in params)
    with pytest.raises(ValueError, match="last dimension 11"):
        view.unravel(torch.zeros(5, 10))
    with pytest.raises(ValueError, match="lacks site"):
        view.ravel({"a": params["a"]})


def _per_chain(model, view, z, x, y, num_data=None):
    """Per-chain autograd of ``model.log_density``: ``(grad [C, D], value [C])``; ``x``/``y``
    shared, or one batch per chain when they carry a chain dimension."""
    grads, values = [], []
    for c in range(z.shape[0]):
        zc = z[c].clone().requires_grad_(True)
        xc, yc = (x[c], y[c]) if x.dim() == 3 else (x, y)
        lp = model.log_density(view.unravel(zc), xc, yc, num_data=num_data)
        (g,) = torch.autograd.grad(lp, zc)
        grads.append(g)
        values.append(lp.detach())
    return torch.stack(grads), torch.stack(values)


@pytest.mark.parametrize("gradient", ["sum", "vmap"])
def test_vmap_path_matches_per_chain_autograd(tkwargs, gradient):
    # Not an MLP (a nested Sequential): the vmapped log_density, shared and per-chain data, 1 and 4 chains.
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 5), nn.Tanh()), nn.Linear(5, 1)).to(**tkwargs)
    model = BayesianNet(net, HierarchicalGaussian(), Gaussian(scale=dist.HalfNormal(1.0)))
    x, y = torch.randn(9, 2, **tkwargs), torch.randn(9, **tkwargs)
    potential = make_potential(model, x, y, num_data=30, gradient=gradient)
    assert potential.path == "vmap" and potential.gradient == gradient
    z = potential.init(4, "prior", x)
    assert z.shape == (4, potential.view.size)
    xs, ys = x[torch.randperm(9)[:6]].expand(4, 6, 2), torch.randn(4, 6, **tkwargs)
    for zz, xx, yy, per_chain in ((z, x, y, False), (z[:1], x, y, False), (z, xs, ys, True)):
        grad, value = potential(zz, xx, yy, per_chain=per_chain)
        want_g, want_v = _per_chain(model, potential.view, zz, xx, yy, num_data=30)
        torch.testing.assert_close(value, want_v)
        torch.testing.assert_close(grad, want_g)
    grad, value = potential.bind(x, y)(z)
    torch.testing.assert_close(value, _per_chain(model, potential.view, z, x, y, 30)[1])
    with pytest.raises(ValueError, match="y is required"):
        potential(z, x)
    with pytest.raises(ValueError, match="gradient must be one of"):
        make_potential(model, x, y, gradient="forward")


@pytest.mark.parametrize("case", ["hierarchical, latent noise, minibatch", "layerwise, two outputs, no bias"])
def test_mlp_path_equals_the_models_log_density(tkwargs, case):
    # Row by row against BayesianNet.log_density and its autograd gradient, in float64.
    if case.startswith("hierarchical"):
        net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1))
        model = BayesianNet(net.to(**tkwargs), HierarchicalGaussian(), Gaussian(scale=dist.HalfNormal(1.0)))
        y_shape, num_data = (11,), 40
    else:
        net = nn.Sequential(nn.Linear(3, 6, bias=False), nn.SiLU(), nn.Linear(6, 2))
        model = BayesianNet(net.to(**tkwargs), LayerwiseGaussian(1.3), Gaussian(scale=0.3, num_outputs=2))
        y_shape, num_data = (11, 2), None
    x, y = model.check_data(torch.randn(11, 3, **tkwargs), torch.randn(*y_shape, **tkwargs))
    potential = make_potential(model, x, y, num_data=num_data)
    assert potential.path == "mlp"
    z = potential.init(4, "prior", x)
    grad, value = potential(z, x, y)
    assert grad.shape == (4, potential.view.size) and value.shape == (4,)
    want_g, want_v = _per_chain(model, potential.view, z, x, y, num_data)
    torch.testing.assert_close(value, want_v, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(grad, want_g, rtol=1e-12, atol=1e-10)
    # per-chain batches of an MLP go the vmapped way
    xs, ys = x.expand(4, *x.shape), y.expand(4, *y.shape)
    grad, value = potential(z, xs, ys, per_chain=True)
    torch.testing.assert_close(value, want_v, rtol=1e-12, atol=1e-10)
    assert make_potential(model, x, y, mlp=False).path == "vmap"


def test_mlp_path_is_only_for_mlps(tkwargs):
    x, y = torch.randn(5, 2, **tkwargs), torch.randn(5, **tkwargs)
    dropout = nn.Sequential(nn.Linear(2, 4), nn.Dropout(), nn.Linear(4, 1))
    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 4), nn.Tanh()), nn.Linear(4, 1))
    for net in (dropout, nested, nn.Linear(2, 1)):
        model = BayesianNet(net.to(**tkwargs), LayerwiseGaussian(1.0), Gaussian(0.1))
        assert make_potential(model, x, y).path == "vmap"
    assert density._mlp_layers(object(), x) is None


def test_likelihood_only(tkwargs):
    # Every path: the rescaled log-likelihood alone (the prior and Jacobians left out).
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).to(**tkwargs)
    model = BayesianNet(net, IIDGaussian(1.0), Gaussian(scale=dist.HalfNormal(1.0)))
    x, y = torch.randn(8, 2, **tkwargs), torch.randn(8, **tkwargs)
    z = make_potential(model, x, y).init(3, "prior", x)
    params = model.constrain(FlatView(model.latent_shapes(x)).unravel(z))
    want = torch.stack([model.log_likelihood({n: v[c] for n, v in params.items()}, x, y).sum() for c in range(3)])
    for mlp in (True, False):
        _, value = make_potential(model, x, y, num_data=20, likelihood_only=True, mlp=mlp)(z, x, y)
        torch.testing.assert_close(value, want * 20 / 8)


def test_trace_path_of_bayesian_net_equals_its_log_density(tkwargs):
    # BayesianNet.forward(x, y, num_data=N) has a subsampled plate: Pyro's trace must give the
    # same minibatch log density (and gradient) as the model's log_density(num_data=N).
    net = nn.Linear(2, 1).to(**tkwargs)
    model = BayesianNet(net, IIDGaussian(1.0), Gaussian(scale=dist.HalfNormal(1.0)))
    x, y = torch.randn(30, 2, **tkwargs), torch.randn(30, **tkwargs)
    fast = make_potential(model, x[:10], y[:10], num_data=30)
    # A wrapper without log_density forces the trace path on the same Pyro model.
    traced = make_potential(lambda x, y=None, num_data=None: model(x, y, num_data=num_data), x[:10], y[:10], 30)
    assert traced.path == "trace" and list(traced.view.shapes) == list(fast.view.shapes)
    z = torch.randn(3, fast.view.size, **tkwargs)
    for gradient in ("sum", "vmap"):
        traced.gradient = gradient
        g_trace, v_trace = traced(z, x[:10], y[:10])
        g_fast, v_fast = fast(z, x[:10], y[:10])
        torch.testing.assert_close(v_trace, v_fast)
        torch.testing.assert_close(g_trace, g_fast)
    torch.testing.assert_close(traced.view.ravel(traced.unconstrain(traced.constrain(z))), z)
    assert all(torch.equal(traced.constrain(z)[n], v) for n, v in fast.constrain(z).items())


def test_trace_path_checks_the_model(tkwargs):
    x, y = torch.zeros(20, 1, **tkwargs), torch.randn(20, **tkwargs)

    def unscaled(x, y=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), **tkwargs), 2.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    def discrete(x, y=None):
        k = pyro.sample("k", dist.Bernoulli(torch.full((), 0.5, **tkwargs)))
        pyro.sample("obs", dist.Normal(k, 1.0).expand([x.shape[0]]).to_event(1), obs=y)

    def local(x, y=None):
        with pyro.plate("data", 20, subsample_size=x.shape[0]):
            u = pyro.sample("u", dist.Normal(torch.zeros((), **tkwargs), 1.0))
            pyro.sample("obs", dist.Normal(u, 1.0), obs=y)

    with pytest.raises(ValueError, match="subsampled plate"):
        make_potential(unscaled, x[:5], y[:5], num_data=20)
    with pytest.raises(ValueError, match="discrete"):
        make_potential(discrete, x, y)
    with pytest.raises(ValueError, match="local latent"):
        make_potential(local, x[:5], y[:5], num_data=20)
    potential = make_potential(unscaled, x, y)  # all the data: no rescaling needed
    assert potential.init(3, "zeros", x).shape == (3, 1)
    with pytest.raises(ValueError, match="init for a model without log_density must be one of"):
        potential.init(3, "module", x)


def test_autograd_grad_and_value_checks_the_shape(tkwargs):
    fn = autograd_grad_and_value(lambda z: -z.pow(2).sum(-1))
    grad, value = fn(torch.ones(2, 3, **tkwargs))
    torch.testing.assert_close(grad, torch.full((2, 3), -2.0, **tkwargs))
    torch.testing.assert_close(value, torch.full((2,), -3.0, **tkwargs))
    with pytest.raises(ValueError, match=r"\[chains, D\] to \[chains\]"):
        autograd_grad_and_value(lambda z: -z.pow(2).sum())(torch.ones(2, 3, **tkwargs))


def test_deprecated_flat_module_gives_the_same_numbers(tkwargs):
    import inference.flat as flat

    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).to(**tkwargs)
    model = BayesianNet(net, IIDGaussian(1.0), Gaussian(0.3))
    x, y = torch.randn(7, 2, **tkwargs), torch.randn(7, **tkwargs)
    for name, new in (("FlatView", FlatView), ("autograd_value_and_grad", autograd_grad_and_value),
                      ("ELEMENTWISE_ACTIVATIONS", density.ELEMENTWISE_ACTIVATIONS)):
        with pytest.warns(DeprecationWarning, match=f"inference.flat.{name} is deprecated; use inference.density"):
            assert getattr(flat, name) is new
    z = make_potential(model, x, y).init(3, "prior", x)
    with pytest.warns(DeprecationWarning, match="batched_potential is deprecated"):
        view, fn = flat.batched_potential(model, x, y)
    assert torch.equal(fn(z)[1], make_potential(model, x, y, mlp=False, gradient="vmap")(z, x, y)[1])
    with pytest.warns(DeprecationWarning, match="mlp_potential is deprecated"):
        view, fn = flat.mlp_potential(model, x, y)
    assert view.shapes == model.latent_shapes(x)
    assert torch.equal(fn(z)[0], make_potential(model, x, y)(z, x, y)[0])
    with pytest.warns(DeprecationWarning):
        assert flat.mlp_potential(object(), x, y) is None
    with pytest.raises(AttributeError):
        _ = flat.nothing
