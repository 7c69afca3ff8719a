"""The SingleTaskGP baseline."""

from __future__ import annotations

import pytest
import torch
from botorch.models import SingleTaskGP
from botorch.sampling import SobolQMCNormalSampler


def test_baseline_is_a_fitted_single_task_gp(fit, device):
    model = fit("gp", torch.float64, device)
    assert isinstance(model, SingleTaskGP) and not model.training
    fant = model.fantasize(torch.rand(2, 1, 2, dtype=torch.float64, device=device),
                           sampler=SobolQMCNormalSampler(torch.Size([3])))
    assert fant.posterior(torch.rand(4, 2, dtype=torch.float64, device=device)).mean.shape == (3, 2, 4, 1)


def test_legacy_gp_has_the_paper_era_priors(fit, device):
    # BoTorch 0.8.5 (the paper's): ScaleKernel(Matern-5/2 ARD), Gamma(3, 6) lengthscales, Gamma(2, 0.15)
    # output scale, Gamma(1.1, 0.05) noise; unlike the current default (RBF, log-normal priors).
    from gpytorch.kernels import MaternKernel, ScaleKernel
    from gpytorch.priors import GammaPrior

    model = fit("gp_legacy", torch.float64, device)
    assert isinstance(model, SingleTaskGP) and isinstance(model.covar_module, ScaleKernel)
    base = model.covar_module.base_kernel
    assert isinstance(base, MaternKernel) and base.nu == 2.5 and base.ard_num_dims == 2
    for prior, (a, b) in ((base.lengthscale_prior, (3.0, 6.0)), (model.covar_module.outputscale_prior, (2.0, 0.15)),
                          (model.likelihood.noise_covar.noise_prior, (1.1, 0.05))):
        assert isinstance(prior, GammaPrior)
        assert (float(prior.concentration), float(prior.rate)) == pytest.approx((a, b))
    assert not isinstance(fit("gp", torch.float64, device).covar_module, ScaleKernel)
