"""NNGP and NTK kernels: Monte Carlo over random networks, BoTorch agreement, PSD, gradients, GPs."""

from __future__ import annotations

import math

import pytest
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.kernels.infinite_width_bnn import InfiniteWidthBNNKernel
from gpytorch.kernels import ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from scenarios import z_critical

from priors.kernels import NNGPKernel, NTKKernel


def _random_net_outputs(
    x: torch.Tensor, num_nets: int, width: int, depth: int, wv: float, bv: float, act
) -> torch.Tensor:
    """Outputs ``[num_nets, n]`` of independent random networks (weights N(0, wv/fan_in), biases N(0, bv))."""
    h = x.expand(num_nets, *x.shape)  # [S, n, d]
    fan_in = x.shape[-1]
    for _ in range(depth):
        w = torch.randn(num_nets, fan_in, width, dtype=x.dtype, device=x.device) * math.sqrt(wv / fan_in)
        b = torch.randn(num_nets, 1, width, dtype=x.dtype, device=x.device) * math.sqrt(bv)
        h = act(h @ w + b)
        fan_in = width
    w = torch.randn(num_nets, fan_in, 1, dtype=x.dtype, device=x.device) * math.sqrt(wv / fan_in)
    b = torch.randn(num_nets, 1, 1, dtype=x.dtype, device=x.device) * math.sqrt(bv)
    return (h @ w + b).squeeze(-1)


def _points(tkwargs: dict) -> torch.Tensor:
    x = torch.randn(6, 3, **tkwargs)
    x[4] = x[1]  # a repeated point: x = x'
    x[5] = 0.0  # a zero input
    return x


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_monte_carlo_over_random_networks_converges_like_one_over_sqrt_samples(activation, tkwargs):
    """One hidden layer: the output covariance over random nets equals the NNGP kernel at any width.

    Check 1 (exactness): with S = 2^14 nets every entry passes a z-test against the kernel with
    its own Monte Carlo standard error (21 entries, Bonferroni, family-wise false-failure rate 1e-3).
    Check 2 (rate): on disjoint blocks of S = 2^8, 2^10, 2^12, 2^14 nets, the RMS standardised
    error falls with slope -1/2 in log S; the slope's sampling sd is ~0.07 here (4 points, 21
    correlated entries), and we accept [-0.8, -0.2] (> 4 sd).
    """
    torch.manual_seed(0)
    act = {"relu": torch.relu, "erf": torch.erf}[activation]
    x = _points(tkwargs)
    kernel = NNGPKernel(depth=1, activation=activation, weight_variance=1.7, bias_variance=0.3).to(**tkwargs)
    with torch.no_grad():
        target = kernel(x).to_dense()
    iu = torch.triu_indices(6, 6)
    sizes = [2**8, 2**10, 2**12, 2**14]
    f = _random_net_outputs(x, sum(sizes), width=64, depth=1, wv=1.7, bv=0.3, act=act)
    prods = (f[:, :, None] * f[:, None, :])[:, iu[0], iu[1]]  # [S, 21]
    sd = prods.std(0)
    errors, start = [], 0
    for size in sizes:
        block = prods[start : start + size]
        start += size
        errors.append(((block.mean(0) - target[iu[0], iu[1]]) / sd).square().mean().sqrt())
    z = (block.mean(0) - target[iu[0], iu[1]]).abs() / (sd / math.sqrt(sizes[-1]))
    assert z.max() < z_critical(21)
    logs = torch.tensor(sizes, **tkwargs).log()
    logs = logs - logs.mean()
    loge = torch.stack(errors).log()
    slope = ((loge - loge.mean()) * logs).sum() / logs.square().sum()
    assert -0.8 < slope < -0.2


def test_monte_carlo_two_hidden_layers_wide_networks(tkwargs):
    """Depth 2 is Gaussian only as width -> ∞: the finite-width bias is O(1/n) (< 1% at n = 128),
    well below the Monte Carlo error (~2-3%); 21 entries, Bonferroni z-test at false-failure rate 1e-3."""
    torch.manual_seed(1)
    x = _points(tkwargs)
    kernel = NNGPKernel(depth=2, weight_variance=2.0, bias_variance=0.2).to(**tkwargs)
    with torch.no_grad():
        target = kernel(x).to_dense()
    iu = torch.triu_indices(6, 6)
    f = torch.cat([_random_net_outputs(x, 512, 128, 2, 2.0, 0.2, torch.relu) for _ in range(4)])
    prods = (f[:, :, None] * f[:, None, :])[:, iu[0], iu[1]]
    z = (prods.mean(0) - target[iu[0], iu[1]]).abs() / (prods.std(0) / math.sqrt(prods.shape[0]))
    assert z.max() < z_critical(21)


@pytest.mark.parametrize("depth", [1, 3])
def test_matches_botorch_infinite_width_bnn_kernel(depth, tkwargs):
    torch.manual_seed(2)
    x, z = torch.randn(30, 5, **tkwargs), torch.randn(20, 5, **tkwargs)
    ours = NNGPKernel(depth=depth).to(**tkwargs)
    ours.weight_variance, ours.bias_variance = 1.4, 0.25  # after .to(): exact in float64
    theirs = InfiniteWidthBNNKernel(depth=depth).to(**tkwargs)
    theirs.weight_var, theirs.bias_var = 1.4, 0.25
    for a, b in ((x, x), (x, z)):
        ref = theirs(a, b).to_dense().detach()
        fast = ours.forward(a, b).detach()  # autograd path (hyperparameters require grad)
        with torch.no_grad():
            nograd = ours.forward(a, b)  # in-place blocked path
        # BoTorch clamps correlations to 1 - 1e-7, which moves x = x' entries by ~1e-7 relative.
        assert ((fast - ref).abs() / ref.abs()).max() < 1e-6
        assert (nograd - fast).abs().max() < 1e-12


@pytest.mark.parametrize("cls", [NNGPKernel, NTKKernel])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "abs"])
def test_inplace_path_equals_autograd_path(cls, activation, tkwargs):
    torch.manual_seed(3)
    x, z = torch.randn(70, 4, **tkwargs), torch.randn(50, 4, **tkwargs)
    kernel = cls(depth=3, activation=activation, weight_variance=1.3, bias_variance=0.2).to(**tkwargs)
    for a, b in ((x, x), (x, z)):
        slow = kernel.forward(a, b)
        with torch.no_grad():
            fast = kernel.forward(a, b)
        assert (slow - fast).abs().max() < 1e-12 * slow.abs().max()
        assert torch.allclose(kernel.forward(a, b, diag=True), torch.diagonal(kernel.forward(a, a)), atol=1e-12)


def test_quadrature_kernel_equals_closed_form_for_a_relu_callable(tkwargs):
    x = _points(tkwargs)
    for cls in (NNGPKernel, NTKKernel):
        closed = cls(depth=3, activation="relu").to(**tkwargs).forward(x, x)
        quad = cls(depth=3, activation=torch.relu).to(**tkwargs).forward(x, x)
        # Off the diagonal, the repeated pair x[1] = x[4] has a correlation of 1 only up to
        # rounding (ε ~ 1e-16), which arccos turns into ~sqrt(ε) in the NTK's derivative map.
        duplicate = torch.zeros_like(closed, dtype=torch.bool)
        duplicate[1, 4] = duplicate[4, 1] = True
        assert torch.allclose(closed[~duplicate], quad[~duplicate], rtol=1e-10, atol=1e-12)
        assert torch.allclose(closed[duplicate], quad[duplicate], rtol=1e-7)


@pytest.mark.parametrize("cls", [NNGPKernel, NTKKernel])
@pytest.mark.parametrize("activation", ["relu", "abs", "erf", "tanh", "gelu"])
def test_kernels_are_psd_on_random_inputs(cls, activation, tkwargs):
    torch.manual_seed(4)
    x = torch.cat([torch.randn(24, 4, **tkwargs), torch.zeros(1, 4, **tkwargs)])
    x = torch.cat([x, x[:3]])  # duplicates: singular but PSD
    kernel = cls(depth=2, activation=activation, weight_variance=1.5, bias_variance=0.1).to(**tkwargs)
    with torch.no_grad():
        gram = kernel(x).to_dense()
    assert torch.allclose(gram, gram.mT, atol=1e-12)
    evals = torch.linalg.eigvalsh(gram)
    assert evals.min() > -1e-10 * evals.max()


@pytest.mark.parametrize("cls", [NNGPKernel, NTKKernel])
@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
@pytest.mark.parametrize("bias_variance", [0.2, 0.0])
def test_hyperparameter_and_input_gradients_are_finite(cls, activation, bias_variance, tkwargs):
    x = _points(tkwargs).requires_grad_(True)  # includes x = x' and x = 0
    kernel = cls(depth=3, activation=activation, weight_variance=1.2, bias_variance=bias_variance).to(**tkwargs)
    gram = kernel(x).to_dense()
    (gram.sum() + kernel(x, diag=True).sum()).backward()
    assert torch.isfinite(gram).all()
    assert torch.isfinite(x.grad).all()
    for name, param in kernel.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_batch_shape_and_scale_kernel(tkwargs):
    torch.manual_seed(5)
    x = torch.randn(2, 9, 3, **tkwargs)
    batched = ScaleKernel(NNGPKernel(depth=2, batch_shape=torch.Size([2])), batch_shape=torch.Size([2])).to(**tkwargs)
    batched.base_kernel.weight_variance = torch.tensor([1.0, 2.5], **tkwargs).reshape(2, 1, 1)
    batched.base_kernel.bias_variance = torch.tensor([0.1, 0.7], **tkwargs).reshape(2, 1, 1)
    batched.outputscale = torch.tensor([0.5, 3.0], **tkwargs)
    gram = batched(x).to_dense()
    assert gram.shape == (2, 9, 9)
    for i, (wv, bv, scale) in enumerate([(1.0, 0.1, 0.5), (2.5, 0.7, 3.0)]):
        single = NNGPKernel(depth=2, weight_variance=wv, bias_variance=bv).to(**tkwargs)
        assert torch.allclose(gram[i], scale * single(x[i]).to_dense(), atol=1e-12)
    with torch.no_grad():  # the in-place path broadcasts a batch of hyperparameters over unbatched x
        assert torch.allclose(
            batched(x[0]).to_dense()[1], 3.0 * NNGPKernel(2, "relu", 2.5, 0.7).to(**tkwargs)(x[0]).to_dense()
        )


@pytest.mark.parametrize(("cls", "activation"), [(NNGPKernel, "erf"), (NTKKernel, "relu")])
def test_single_task_gp_fits_and_predicts(cls, activation, tkwargs):
    torch.manual_seed(6)
    train_x = torch.rand(40, 2, **tkwargs)
    test_x = torch.rand(50, 2, **tkwargs)

    def target(x):
        return torch.sin(4 * x[:, :1]) + x[:, 1:] ** 2

    train_y = target(train_x) + 0.01 * torch.randn(40, 1, **tkwargs)
    model = SingleTaskGP(train_x, train_y, covar_module=ScaleKernel(cls(depth=3, activation=activation)))
    # 30 L-BFGS iterations keep the test short; the fit reaches ~1e-3 relative test MSE
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model), optimizer_kwargs={"options": {"maxiter": 30}})
    base = model.covar_module.base_kernel
    assert torch.isfinite(base.weight_variance).all() and torch.isfinite(base.bias_variance).all()
    with torch.no_grad():
        post = model.posterior(test_x)
    mse = (post.mean - target(test_x)).square().mean()
    assert mse < 0.02 * target(test_x).var()  # explains > 98% of the variance
    assert post.rsample(torch.Size([3])).shape == (3, 50, 1)


def test_bad_input_is_rejected(tkwargs):
    for depth in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="depth"):
            NNGPKernel(depth=depth)
    with pytest.raises(ValueError, match="weight_variance"):
        NNGPKernel(weight_variance=-1.0)
    with pytest.raises(ValueError, match="weight_variance"):
        NTKKernel(weight_variance=0.0)
    with pytest.raises(ValueError, match="bias_variance"):
        NNGPKernel(bias_variance=-0.1)
    kernel = NNGPKernel().to(**tkwargs)
    with pytest.raises(ValueError, match="weight_variance"):
        kernel.weight_variance = -2.0
    with pytest.raises(ValueError, match=r"\[\.\.\., n, d\]"):
        kernel(torch.randn(5, **tkwargs))
    with pytest.raises(ValueError, match="bias-free"):
        NNGPKernel(bias_variance=0.0).bias_variance = 1.0
    with pytest.raises(ValueError, match="activation"):
        NNGPKernel(activation="nope")


def test_hyperparameter_priors_are_registered(tkwargs):
    from gpytorch.priors import GammaPrior

    kernel = NNGPKernel(weight_variance_prior=GammaPrior(2.0, 1.0), bias_variance_prior=GammaPrior(1.0, 5.0))
    kernel = kernel.to(**tkwargs)
    assert {name for name, *_ in kernel.named_priors()} == {"weight_variance_prior", "bias_variance_prior"}
    torch.manual_seed(7)
    kernel.sample_from_prior("weight_variance_prior")  # uses the registered setter
    assert kernel.weight_variance.item() > 0 and kernel.weight_variance.item() != pytest.approx(1.0)
    with pytest.raises(ValueError, match="bias-free"):
        NNGPKernel(bias_variance=0.0, bias_variance_prior=GammaPrior(1.0, 1.0))
