"""PFNSurrogate: the shipped PFN, its feature limit, conditioning by reading data."""

from __future__ import annotations

import pytest
import torch
from botorch.models.model import ModelList

from bayesnets.surrogates.pfn import MAX_PFN_FEATURES, PFNSurrogate, fit_pfn


def test_more_features_than_the_pfn_supports_is_a_clear_error(tkwargs):
    X = torch.rand(8, MAX_PFN_FEATURES + 1, **tkwargs)
    with pytest.raises(ValueError, match="supports 1-5"):
        fit_pfn(X, X[:, :1])


def test_condition_and_multi_output(fit, device, objective):
    model = fit("pfn", torch.float64, device)
    assert isinstance(model, PFNSurrogate)
    Xn = torch.rand(3, 2, dtype=torch.float64, device=device)
    cond = model.condition_on_observations(Xn, objective(Xn))
    assert cond.train_X.shape[0] == model.train_X.shape[0] + 3
    assert isinstance(fit("pfn", torch.float64, device, m=2), ModelList)
