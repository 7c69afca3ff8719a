"""PolyCom activations (arXiv:2411.03884): PolyReLU and PolyNorm."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from bayesnets.nn import PolyNorm, PolyReLU


def _set(module: nn.Module, coefficients: list[float], **tkwargs) -> nn.Module:
    module = module.to(**tkwargs)
    with torch.no_grad():
        module.coefficients.copy_(torch.tensor(coefficients, **tkwargs))
    return module


def test_polyrelu_with_unit_linear_coefficient_is_relu(tkwargs):
    x = torch.randn(50, 7, **tkwargs)
    x[0, :3] = 0.0
    assert torch.equal(_set(PolyReLU(3), [0, 1, 0, 0], **tkwargs)(x), torch.relu(x))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_polyrelu_is_the_polynomial_of_relu(order, tkwargs):
    x = torch.randn(40, 5, **tkwargs)
    a = torch.randn(order + 1, **tkwargs)
    act = _set(PolyReLU(order), a.tolist(), **tkwargs)
    r = torch.relu(x)
    expected = sum(a[i] * r**i for i in range(order + 1))
    torch.testing.assert_close(act(x), expected)


def test_two_polyrelu_units_represent_a_square(tkwargs):
    x = torch.linspace(-3, 3, 101, **tkwargs)
    act = _set(PolyReLU(3), [0, 0, 1, 0], **tkwargs)
    torch.testing.assert_close(act(x) + act(-x), x**2, rtol=0, atol=0)


def test_polynorm_is_the_normalized_polynomial(tkwargs):
    x = torch.randn(6, 4, 9, **tkwargs)
    act = _set(PolyNorm(3, eps=1e-6), [0.3, -0.5, 1.2, 0.7], **tkwargs)

    def rms_normalize(u):
        return u / torch.sqrt((u * u).mean(-1, keepdim=True) + 1e-6)

    expected = 0.3 - 0.5 * rms_normalize(x) + 1.2 * rms_normalize(x**2) + 0.7 * rms_normalize(x**3)
    torch.testing.assert_close(act(x), expected)


@pytest.mark.parametrize("c", [1e-3, 0.5, 7.0, 1e3])
def test_polynorm_is_scale_invariant(c, tkwargs):
    x = torch.randn(8, 16, **tkwargs)
    act = _set(PolyNorm(3, eps=0.0), [0.1, 0.4, -0.3, 0.9], **tkwargs)
    torch.testing.assert_close(act(c * x), act(x), rtol=1e-12, atol=1e-12)
    # Not a vacuous check: a sign flip changes the odd powers.
    assert not torch.allclose(act(-x), act(x))


def test_initialisation_and_gradients(tkwargs):
    for act in (PolyReLU(3), PolyNorm(3)):
        torch.testing.assert_close(act.coefficients.detach(), torch.tensor([0.0, 1 / 3, 1 / 3, 1 / 3]))
        act = act.to(**tkwargs)
        x = torch.randn(3, 5, **tkwargs).requires_grad_()
        assert torch.autograd.gradcheck(lambda x, a, act=act: torch.func.functional_call(act, {"coefficients": a}, x),
                                        (x, act.coefficients.detach().clone().requires_grad_()))


@pytest.mark.parametrize("activation", [PolyReLU, PolyNorm])
def test_gradients_vectorise_over_coefficient_draws(activation, tkwargs):
    # The custom backward under torch.func (vmap over draws of the coefficients, grad inside,
    # as BayesianNet's engines do) equals the plain autograd of the defining formula.
    x = torch.randn(5, 7, **tkwargs)
    draws = torch.randn(4, 4, **tkwargs)
    act = activation(3).to(**tkwargs)

    def loss(a, x):
        return torch.func.functional_call(act, {"coefficients": a}, (x,)).sin().sum()

    def reference(a, x):
        if activation is PolyReLU:
            out = sum(a[i] * torch.relu(x) ** i for i in range(4))
        else:
            out = a[0] + sum(a[i] * x**i / torch.sqrt((x ** (2 * i)).mean(-1, keepdim=True) + act.eps)
                             for i in range(1, 4))
        return out.sin().sum()

    ga, gx = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(0, None))(draws, x)
    for k in range(4):
        ra, rx = torch.func.grad(reference, argnums=(0, 1))(draws[k], x)
        torch.testing.assert_close(ga[k], ra)
        torch.testing.assert_close(gx[k], rx)


def test_bad_arguments():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="order"):
            PolyReLU(bad)
        with pytest.raises(ValueError, match="order"):
            PolyNorm(bad)
    with pytest.raises(ValueError, match="eps"):
        PolyNorm(3, eps=-1.0)


@pytest.mark.parametrize("activation", [PolyReLU, PolyNorm])
def test_in_bayesian_net_with_svi(activation, fit_small_regression):
    _, post, x, _ = fit_small_regression(nn.Sequential(nn.Linear(2, 12), activation(3), nn.Linear(12, 1)))
    assert post["1.coefficients"].shape == (1, 16, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the activation must vmap over draws (no loop fallback)
        pred = post.predict(x)
    assert pred.f.shape == (1, 16, 48, 1) and torch.isfinite(pred.f).all()
