"""DKLSurrogate: the deep kernel is trained, fantasies work, multi-output shares the network."""

from __future__ import annotations

import torch
from botorch.sampling import SobolQMCNormalSampler

from bayesnets.surrogates.dkl import DKLSurrogate, FeatureKernel


def test_network_is_trained_and_fantasies_work(fit, device, objective):
    model = fit("dkl", torch.float64, device)
    assert isinstance(model.covar_module, FeatureKernel)
    untrained = DKLSurrogate(model.train_inputs[0], objective(model.train_inputs[0]), width=16, fit=False)
    moved = any(not torch.equal(a, b) for a, b in zip(model.covar_module.extractor.parameters(),
                                                      untrained.covar_module.extractor.parameters()))
    assert moved
    fant = model.fantasize(torch.rand(2, 1, 2, dtype=torch.float64, device=device),
                           sampler=SobolQMCNormalSampler(torch.Size([3])))
    assert fant.posterior(torch.rand(4, 2, dtype=torch.float64, device=device)).mean.shape == (3, 2, 4, 1)


def test_multi_output_shares_one_network(fit, device):
    model = fit("dkl", torch.float64, device, m=2)
    assert model.covar_module.base.outputscale.shape == (2,)
    assert model.posterior(torch.rand(4, 2, dtype=torch.float64, device=device)).mean.shape == (4, 2)
