"""PFN transformer: the attention structure (test points independent of each other, train set
order irrelevant), ragged train sets, bad input, save/load."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical

from bayesnets.pfn import PFN, BarDistribution, PFNConfig


def _model(tkwargs: dict, **kw) -> PFN:
    torch.manual_seed(0)
    model = PFN(PFNConfig(max_features=3, emsize=32, nlayers=2, nhead=4, nhid=64, num_buckets=20, **kw))
    # Zero-initialised output projections make fresh layers the identity; randomise them so
    # attention really mixes tokens and the structural checks below are not vacuous.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.to(**tkwargs).eval()


def _data(tkwargs: dict, b: int = 2, n: int = 9, m: int = 5, d: int = 2):
    g = torch.Generator(device=tkwargs["device"]).manual_seed(1)
    return (torch.rand(b, n, d, generator=g, **tkwargs), torch.randn(b, n, generator=g, **tkwargs),
            torch.rand(b, m, d, generator=g, **tkwargs))


def test_test_points_do_not_see_each_other(tkwargs: dict) -> None:
    model = _model(tkwargs)
    tx, ty, sx = _data(tkwargs)
    out = model(tx, ty, sx)
    changed = sx.clone()
    changed[:, 2] = torch.tensor([0.9, 0.1], **tkwargs)
    out2 = model(tx, ty, changed)
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(out2[:, keep], out[:, keep], atol=1e-10, rtol=1e-10)
    assert (out2[:, 2] - out[:, 2]).abs().max() > 1e-3  # its own prediction does change
    # Predicting each test point alone gives the same as predicting them together.
    alone = torch.cat([model(tx, ty, sx[:, j:j + 1]) for j in range(sx.shape[1])], dim=1)
    torch.testing.assert_close(alone, out, atol=1e-10, rtol=1e-10)


def test_train_order_does_not_matter(tkwargs: dict) -> None:
    model = _model(tkwargs)
    tx, ty, sx = _data(tkwargs)
    perm = torch.randperm(tx.shape[1], generator=torch.Generator().manual_seed(3)).to(tkwargs["device"])
    torch.testing.assert_close(model(tx[:, perm], ty[:, perm], sx), model(tx, ty, sx), atol=1e-10, rtol=1e-10)
    ty2 = ty.clone()
    ty2[:, 0] += 1.0
    assert (model(tx, ty2, sx) - model(tx, ty, sx)).abs().max() > 1e-3  # train targets matter


def test_ragged_train_sets_match_separate_calls(tkwargs: dict) -> None:
    model = _model(tkwargs)
    tx, ty, sx = _data(tkwargs, n=9)
    sizes = torch.tensor([4, 9], device=tkwargs["device"])
    out = model(tx, ty, sx, train_sizes=sizes)
    for b, n in enumerate(sizes.tolist()):
        torch.testing.assert_close(out[b:b + 1], model(tx[b:b + 1, :n], ty[b:b + 1, :n], sx[b:b + 1]),
                                   atol=1e-10, rtol=1e-10)


def test_predict_shapes_dtypes_and_heads(tkwargs: dict) -> None:
    model = _model(tkwargs)
    tx, ty, sx = _data(tkwargs)
    d = model.predict(tx[0], ty[0], sx[0])
    assert isinstance(d, BarDistribution) and d.batch_shape == (5,) and d.mean.dtype == tkwargs["dtype"]
    assert model.predict(tx, ty, sx).batch_shape == (2, 5)
    assert d.quantile(0.5).shape == (5,) and d.sample((4,)).shape == (4, 5)
    one = model.predict(tx[0, :, :1], ty[0], sx[0, :, :1])  # fewer features than max: zero-padded
    assert one.batch_shape == (5,)
    clf = _model(tkwargs, num_classes=3)
    c = clf.predict(tx[0], (ty[0] > 0).long(), sx[0])
    assert isinstance(c, Categorical) and c.probs.shape == (5, 3)


def test_bad_input_is_named(tkwargs: dict) -> None:
    model = _model(tkwargs)
    tx, ty, sx = _data(tkwargs)
    with pytest.raises(ValueError, match="test_x must have shape"):
        model.predict(tx[0], ty[0], sx[0, :, :1])
    with pytest.raises(ValueError, match="4 features; this PFN supports 1 to 3"):
        model.predict(torch.rand(6, 4, **tkwargs), ty[0, :6], torch.rand(2, 4, **tkwargs))
    with pytest.raises(ValueError, match="train set is empty"):
        model.predict(tx[0, :0], ty[0, :0], sx[0])
    with pytest.raises(ValueError, match="train_y"):
        model.predict(tx[0], ty[0, :3], sx[0])
    with pytest.raises(ValueError, match="unsqueeze"):
        model.predict(tx[0, :, 0], ty[0], sx[0])
    bad = ty[0].clone()
    bad[1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.predict(tx[0], bad, sx[0])
    with pytest.raises(ValueError, match="divisible"):
        PFNConfig(emsize=30, nhead=4)


def test_save_load_roundtrip(tkwargs: dict, tmp_path) -> None:
    model = _model(tkwargs)
    tx, ty, sx = _data(tkwargs)
    model.save(tmp_path / "m.safetensors", metadata={"note": "x"})
    again = PFN.load(tmp_path / "m.safetensors").to(**tkwargs)
    assert again.metadata == {"note": "x"} and again.config == model.config
    torch.testing.assert_close(again(tx, ty, sx), model(tx, ty, sx))
    (tmp_path / "other.safetensors").write_bytes(b"")
    with pytest.raises(Exception):  # noqa: B017  (safetensors' own error for a non-file)
        PFN.load(tmp_path / "other.safetensors")
