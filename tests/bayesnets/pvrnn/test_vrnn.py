"""The VRNN baseline: shapes, gradients, causality of online prediction, training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bayesnets.pvrnn import VRNN, VRNNFit, VRNNTrainer, online_prediction_error, train_vrnn


def test_shapes_and_gradients(tkwargs):
    model = VRNN(3, hidden_size=8, latent_size=2, feature_size=5, kl_weight=0.1).to(**tkwargs)
    x = torch.randn(4, 6, 3, **tkwargs)
    x_hat, kl, h = model.filter(x)
    assert x_hat.shape == (4, 6, 3) and kl.shape == (4, 6) and h.shape == (4, 7, 8)
    model.negative_lower_bound(x).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert model.predict_online(x, horizon=3).shape == (4, 6, 3, 3)


def test_online_prediction_uses_only_the_past(tkwargs):
    model = VRNN(2, hidden_size=6, latent_size=2, feature_size=4).to(**tkwargs)
    x = torch.randn(2, 8, 2, **tkwargs)
    changed = x.clone()
    changed[:, 5:] += 1.0
    a = model.predict_online(x, horizon=2, sample=False)
    b = model.predict_online(changed, horizon=2, sample=False)
    torch.testing.assert_close(a[:, :5], b[:, :5])  # made before x_5 was seen
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_training_improves_online_prediction(tkwargs, pfsm):
    x = pfsm(6, 20, seed=4)
    torch.manual_seed(0)
    model = VRNN(2, hidden_size=16, latent_size=2, feature_size=8, kl_weight=0.01).to(**tkwargs)
    untrained = online_prediction_error(model.predict_online(x), x)
    fit = train_vrnn(model, x, num_steps=40, lr=1e-2, progress=False)
    assert isinstance(fit, VRNNFit) and fit.module is model and fit.history["loss"].shape == (40,)
    assert fit.history["loss"][-1] < 0.3 * fit.history["loss"][0]
    trained = online_prediction_error(model.predict_online(x), x)
    # deterministic given the seeds; measured: loss 24x lower, prediction error 30x lower
    assert trained < 0.3 * untrained, (trained, untrained)


def test_bad_input(tkwargs):
    model = VRNN(2).to(**tkwargs)
    with pytest.raises(ValueError, match=r"observations must have shape \[B, T, 2\]"):
        model.filter(torch.zeros(1, 4, 3, **tkwargs))
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        model.predict_online(torch.zeros(1, 4, 2, **tkwargs), horizon=0)
    with pytest.raises(ValueError, match="latent_size must be a positive int"):
        VRNN(2, latent_size=0)
    with pytest.raises(ValueError, match=r"sequences must have shape \[B, T, 2\]"):
        VRNNTrainer(num_steps=1).fit(model, torch.zeros(1, 4, 3, **tkwargs), progress=False)
    with pytest.raises(ValueError, match="batch_size must be None"):
        VRNNTrainer(num_steps=1, batch_size=2)
    with pytest.raises(TypeError, match="must be a VRNN"):
        VRNNTrainer(num_steps=1).fit(nn.GRU(2, 2), torch.zeros(1, 4, 2, **tkwargs), progress=False)


def test_one_call_form_trains_on_the_callers_stream(tkwargs):
    x = torch.randn(2, 5, 2, **tkwargs)
    torch.manual_seed(0)
    model = VRNN(2, hidden_size=4, latent_size=2, feature_size=3).to(**tkwargs)
    twin = copy.deepcopy(model)
    torch.manual_seed(7)
    with pytest.warns(DeprecationWarning, match="num_epochs"):
        old = train_vrnn(model, x, num_epochs=3, weight_decay=0.1, progress=False)
    new = VRNNTrainer(num_steps=3, weight_decay=0.1, seed=7).fit(twin, x, progress=False)
    assert torch.equal(old.history["loss"], new.history["loss"])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
