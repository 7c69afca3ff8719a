"""The SingleTaskGP baseline."""

from __future__ import annotations

import torch
from botorch.models import SingleTaskGP
from botorch.sampling import SobolQMCNormalSampler


def test_baseline_is_a_fitted_single_task_gp(fit, device):
    model = fit("gp", torch.float64, device)
    assert isinstance(model, SingleTaskGP) and not model.training
    fant = model.fantasize(torch.rand(2, 1, 2, dtype=torch.float64, device=device),
                           sampler=SobolQMCNormalSampler(torch.Size([3])))
    assert fant.posterior(torch.rand(4, 2, dtype=torch.float64, device=device)).mean.shape == (3, 2, 4, 1)
