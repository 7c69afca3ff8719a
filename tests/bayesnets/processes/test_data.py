"""The 1-D GP benchmark generator: shapes and ranges, fixed test sets, kernels, and the
moments of the sampled functions (statistical, Bonferroni family-wise false-failure rate 1e-3)."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch
from scenarios import ALPHA, z_critical
from scipy import stats

from bayesnets.processes.data import (
    KERNELS,
    NOISE_STD,
    SCALE_RANGE,
    GPTaskSampler,
    gp_kernel,
    gp_test_set,
    sample_gp,
    student_t,
)


def test_batch_shapes_and_ranges(device):
    sampler = GPTaskSampler("matern52")
    gen = torch.Generator(device=device).manual_seed(1)
    for _ in range(20):
        b = sampler.sample(8, generator=gen, dtype=torch.float32)
        nc, nt = b.context_x.shape[1], b.target_x.shape[1]
        assert 3 <= nc and 3 <= nt and nc + nt <= 50
        assert b.context_x.shape == b.context_y.shape == (8, nc, 1)
        assert b.target_x.shape == b.target_y.shape == (8, nt, 1)
        assert b.x.shape == (8, nc + nt, 1) and b.x.dtype == torch.float32 and b.x.device.type == device.type
        assert b.x.abs().max() <= 2.0
    b = GPTaskSampler(min_context=0).sample(4, num_context=0, num_target=7, device=device)
    assert b.context_x.shape == (4, 0, 1) and b.target_y.shape == (4, 7, 1)


def test_bad_settings():
    with pytest.raises(ValueError, match="kernel must be one of"):
        GPTaskSampler("linear")
    with pytest.raises(ValueError, match="min_context"):
        GPTaskSampler(min_context=40, min_target=20)
    with pytest.raises(ValueError, match="name must be one of"):
        gp_test_set("cosine")
    with pytest.raises(ValueError, match="multiple of batch_size"):
        gp_test_set("rbf", num_tasks=100, batch_size=64)


def test_fixed_test_sets(device):
    a = gp_test_set("periodic", num_tasks=64, batch_size=32, device=device)
    b = gp_test_set("periodic", num_tasks=64, batch_size=32, device=device)
    c = gp_test_set("periodic", num_tasks=64, batch_size=32, seed=7, device=device)
    for u, v in zip(a, b):
        torch.testing.assert_close(u.y, v.y, rtol=0, atol=0)
    assert not torch.equal(a[0].context_x, c[0].context_x)
    # Same seed, same draws up to the noise: the t-noise set is the RBF set plus heavy-tailed noise.
    rbf, tn = gp_test_set("rbf", 32, 32, device=device)[0], gp_test_set("t_noise", 32, 32, device=device)[0]
    torch.testing.assert_close(rbf.x, tn.x)
    assert not torch.allclose(rbf.y, tn.y)


def test_kernels_match_gpytorch(tkwargs):
    x1, x2 = torch.rand(2, 5, 1, **tkwargs) * 4 - 2, torch.rand(2, 6, 1, **tkwargs) * 4 - 2
    ell, scale = torch.tensor([0.3, 0.5], **tkwargs), torch.tensor([0.7, 1.0], **tkwargs)
    for name, kern in (("rbf", gpytorch.kernels.RBFKernel()), ("matern52", gpytorch.kernels.MaternKernel(nu=2.5))):
        for i in range(2):
            kern.lengthscale = ell[i]
            want = scale[i] ** 2 * kern.to(**tkwargs)(x1[i], x2[i]).to_dense()
            torch.testing.assert_close(gp_kernel(name, x1, x2, ell, scale)[i], want.detach())
    period = torch.tensor([0.2, 0.4], **tkwargs)
    d = (x1 - x2.transpose(-1, -2)).abs()
    want = scale[:, None, None] ** 2 * torch.exp(-2 * torch.sin(math.pi * d / period[:, None, None]) ** 2
                                                 / ell[:, None, None] ** 2)
    torch.testing.assert_close(gp_kernel("periodic", x1, x2, ell, scale, period), want)
    with pytest.raises(ValueError, match="period"):
        gp_kernel("periodic", x1, x2, ell, scale)


def test_student_t_matches_scipy():
    # Fixed seed; a correct sampler fails this KS test with probability ALPHA.
    draws = student_t((20000,), 2.1, generator=torch.Generator().manual_seed(3))
    assert stats.kstest(draws.numpy(), stats.t(2.1).cdf).pvalue > ALPHA


def test_gp_draws_have_the_kernel_covariance():
    """With fixed hyperparameters, the sample covariance of y at 3 inputs equals K + σ²I:
    MCSE z-tests on the 6 distinct entries x 3 kernels (Bonferroni, family-wise rate ALPHA)."""
    x = torch.tensor([[-0.3], [0.0], [0.25]], dtype=torch.float64)
    n = 20000
    one = torch.ones(n, dtype=torch.float64)
    zc = z_critical(6 * len(KERNELS))
    iu = torch.triu_indices(3, 3)
    for kernel in KERNELS:
        y = sample_gp(kernel, x.expand(n, 3, 1), 0.3 * one, 0.8 * one, 0.45 * one,
                      generator=torch.Generator().manual_seed(5))[..., 0]
        prods = (y.unsqueeze(-1) * y.unsqueeze(-2))[:, iu[0], iu[1]]
        cov = gp_kernel(kernel, x[None], x[None], one[:1] * 0.3, one[:1] * 0.8, one[:1] * 0.45)[0]
        want = (cov + NOISE_STD**2 * torch.eye(3, dtype=torch.float64))[iu[0], iu[1]]
        z = (prods.mean(0) - want) / (prods.std(0) / math.sqrt(n))
        assert z.abs().max() < zc, (kernel, z)


def test_sampled_scales_follow_the_prior():
    """E[y²] = E[s²] + σ² with s ~ U(0.1, 1): z-test per kernel (Bonferroni over 3, rate ALPHA)."""
    lo, hi = SCALE_RANGE
    e_s2 = (hi**3 - lo**3) / (3 * (hi - lo))
    for kernel in KERNELS:
        b = GPTaskSampler(kernel, min_context=0, min_target=1).sample(
            20000, num_context=0, num_target=1, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
        q = b.target_y.flatten() ** 2 - (e_s2 + NOISE_STD**2)
        z = q.mean() / (q.std() / math.sqrt(q.numel()))
        assert z.abs() < z_critical(len(KERNELS)), (kernel, z)
