"""DeepEnsembleSurrogate: one member per fitted network, each with its own noise."""

from __future__ import annotations

import torch

from bayesnets.surrogates.ensemble import DeepEnsembleSurrogate


def test_members_and_noise(fit, device):
    model = fit("ensemble", torch.float64, device)
    assert isinstance(model, DeepEnsembleSurrogate)
    assert model.ensemble_size == 5 and model.noise_scale.shape == (5,)
    assert model.noise_scale.unique().numel() == 5  # MAP noise per member, not shared
    values = model.posterior(torch.rand(4, 2, dtype=torch.float64, device=device)).values
    assert values.shape == (5, 4, 1) and values.std(0).min() > 0  # members disagree
