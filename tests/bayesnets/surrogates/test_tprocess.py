"""TProcessSurrogate: a t posterior, the data moves with .to(), one model per outcome."""

from __future__ import annotations

import pytest
import torch
from botorch.models.model import ModelList

from bayesnets.surrogates.tprocess import TProcessSurrogate
from bayesnets.tprocess.posterior import ScaleMixturePosterior


def test_t_posterior_and_model_list(fit, device, tkwargs):
    model = fit("tprocess", torch.float64, device)
    assert isinstance(model, TProcessSurrogate)
    assert isinstance(model.posterior(torch.rand(3, 2, **tkwargs)), ScaleMixturePosterior)
    assert model.train_X.device.type == device.type
    assert isinstance(fit("tprocess", torch.float64, device, m=2), ModelList)
    with pytest.raises(ValueError, match=r"train_Y must have shape \[n, 1\]"):
        TProcessSurrogate(torch.rand(5, 2, **tkwargs), torch.rand(5, 2, **tkwargs))


def test_input_transform_is_applied(tkwargs, objective):
    from botorch.models.transforms.input import Normalize

    X = torch.rand(10, 2, **tkwargs)
    Y = objective(X)
    plain = TProcessSurrogate(X, Y)
    # the same data stretched to [-3, 5]^2 and normalised back: the same model
    scaled = TProcessSurrogate(8 * X - 3, Y, input_transform=Normalize(d=2, bounds=torch.tensor(
        [[-3.0, -3.0], [5.0, 5.0]], **tkwargs)))
    Xq = torch.rand(4, 2, **tkwargs)
    torch.testing.assert_close(scaled.posterior(8 * Xq - 3).mean, plain.posterior(Xq).mean, rtol=1e-4, atol=1e-5)
