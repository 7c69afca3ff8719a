"""CNP, NP, ANP, MPNP: context-permutation invariance, batched shapes, input checks, empty context."""

from __future__ import annotations

import pytest
import torch

from bayesnets.processes import ANP, CNP, MPNP, NP, GPTaskSampler, NeuralProcess

MODELS = [CNP, NP, ANP, MPNP]
SMALL = {"hidden": 16, "num_heads": 2}


def _model(cls, tkwargs, **kw) -> NeuralProcess:
    torch.manual_seed(0)
    return cls(**SMALL, **kw).to(**tkwargs)


def _predict(model, seed, *args, **kw):
    torch.manual_seed(seed)  # the same function draws for both calls
    return model.predict(*args, **kw)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_permutation_invariance_in_the_context(cls, tkwargs):
    model = _model(cls, tkwargs)
    b = GPTaskSampler().sample(3, num_context=9, num_target=5, generator=torch.Generator().manual_seed(0),
                               **tkwargs)
    perm = torch.randperm(9)
    a = _predict(model, 1, b.context_x, b.context_y, b.target_x, num_samples=4)
    p = _predict(model, 1, b.context_x[:, perm], b.context_y[:, perm], b.target_x, num_samples=4)
    torch.testing.assert_close(p.loc, a.loc)
    torch.testing.assert_close(p.scale, a.scale)
    # and equivariance in the targets: a target's prediction does not depend on the other targets
    tp = torch.randperm(5)
    t = _predict(model, 1, b.context_x, b.context_y, b.target_x[:, tp], num_samples=4)
    torch.testing.assert_close(t.loc, a.loc[:, :, tp])


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_shapes_for_batched_and_single_tasks(cls, tkwargs):
    model = _model(cls, tkwargs, x_dim=2, y_dim=3)
    cx, cy, tx = torch.randn(4, 6, 2, **tkwargs), torch.randn(4, 6, 3, **tkwargs), torch.randn(4, 7, 2, **tkwargs)
    pred = _predict(model, 2, cx, cy, tx, num_samples=5)
    k = 1 if cls is CNP else 5
    assert pred.num_components == k
    assert pred.mean.shape == pred.stddev.shape == (4, 7, 3)
    assert pred.sample((2,)).shape == (2, 4, 7, 3)
    assert pred.log_prob(torch.randn(4, 7, 3, **tkwargs)).shape == (4, 7)
    assert (pred.stddev > 0).all()
    # One task without a batch axis gives the same numbers as a batch of one.
    single = _predict(model, 2, cx[0], cy[0], tx[0], num_samples=5)
    batch1 = _predict(model, 2, cx[:1], cy[:1], tx[:1], num_samples=5)
    assert single.mean.shape == (7, 3)
    torch.testing.assert_close(single.loc, batch1.loc[:, 0])
    # 1-D y for y_dim = 1
    m1 = _model(cls, tkwargs)
    assert _predict(m1, 0, cx[0, :, :1], cy[0, :, 0], tx[0, :, :1]).mean.shape == (7, 1)
    loss = m1.loss(GPTaskSampler().sample(2, **tkwargs))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in m1.parameters() if p.requires_grad)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_empty_context_predicts_the_prior_predictive(cls, tkwargs):
    model = _model(cls, tkwargs)
    tx = torch.linspace(-2, 2, 11, **tkwargs).unsqueeze(-1)
    empty = torch.zeros(0, 1, **tkwargs)
    pred = _predict(model, 3, empty, torch.zeros(0, **tkwargs), tx, num_samples=6)
    assert pred.mean.shape == (11, 1)
    assert torch.isfinite(pred.mean).all() and (pred.stddev > 0).all()
    # A context point changes the prediction (the empty-context answer is the model's prior, not a fallback).
    one = _predict(model, 3, tx[:1], torch.ones(1, **tkwargs), tx, num_samples=6)
    assert (one.mean - pred.mean).abs().max() > 1e-6
    # Batched empty contexts too, and the training loss accepts them.
    b = GPTaskSampler(min_context=0).sample(2, num_context=0, **tkwargs)
    assert _predict(model, 3, b.context_x, b.context_y, b.target_x).mean.shape == b.target_y.shape
    assert torch.isfinite(model.loss(b))


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_bad_input(cls, tkwargs):
    model = _model(cls, tkwargs)
    cx, cy, tx = torch.randn(5, 1, **tkwargs), torch.randn(5, **tkwargs), torch.randn(3, 1, **tkwargs)
    with pytest.raises(ValueError, match="same number of features"):
        model.predict(cx, cy, torch.randn(3, 2, **tkwargs))
    with pytest.raises(ValueError, match="x_dim=1"):
        model.predict(torch.randn(5, 2, **tkwargs), cy, torch.randn(3, 2, **tkwargs))
    with pytest.raises(ValueError, match="context_y must have shape"):
        model.predict(cx, torch.randn(4, **tkwargs), tx)
    with pytest.raises(ValueError, match="both batched"):
        model.predict(cx, cy, tx[None])
    with pytest.raises(ValueError, match="same number of tasks"):
        model.predict(cx[None].expand(2, 5, 1), cy[None].expand(2, 5), tx[None].expand(3, 3, 1))
    with pytest.raises(ValueError, match="unsqueeze"):
        model.predict(cx[:, 0], cy, tx)
    for name, args in (("context_x", (cx.clone().index_fill_(0, torch.tensor([1]), float("nan")), cy, tx)),
                       ("context_y", (cx, cy.clone().index_fill_(0, torch.tensor([0]), float("inf")), tx)),
                       ("target_x", (cx, cy, tx.clone().index_fill_(0, torch.tensor([2]), float("nan"))))):
        with pytest.raises(ValueError, match=f"{name} contains NaN"):
            model.predict(*args)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        model.predict(cx.tolist(), cy, tx)
    with pytest.raises(TypeError, match="floating-point"):
        model.predict(cx, cy.long(), tx)
    with pytest.raises(ValueError, match="num_samples"):
        model.predict(cx, cy, tx, num_samples=0)
    with pytest.raises(TypeError, match="TaskBatch"):
        model.loss((cx, cy, tx, cy))


def test_bad_settings():
    with pytest.raises(ValueError, match="x_dim"):
        CNP(x_dim=0)
    with pytest.raises(ValueError, match="num_train_samples"):
        NP(num_train_samples=0)
    with pytest.raises(ValueError, match="num_pseudo"):
        MPNP(num_pseudo=0)
    with pytest.raises(ValueError, match="loss weights"):
        MPNP(pseudo_weight=-1.0)
