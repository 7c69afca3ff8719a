"""The shared Gaussian decoder."""

from __future__ import annotations

import pytest
import torch

from bayesnets.processes.decoders import GaussianDecoder


def test_split_first_layer_equals_concatenation(tkwargs):
    dec = GaussianDecoder(2, (3, 4), 2, hidden=8, depth=3, min_std=0.1).to(**tkwargs)
    x = torch.randn(5, 6, 2, **tkwargs)
    r, z = torch.randn(5, 1, 3, **tkwargs), torch.randn(7, 5, 1, 4, **tkwargs)  # shared over points; 7 draws
    loc, scale = dec(x, r, z)
    assert loc.shape == scale.shape == (7, 5, 6, 2)
    assert (scale >= 0.1).all()
    # The same network written as one linear layer on [x, r, z] (what the split layer computes).
    w = torch.cat([dec.input.weight, *(f.weight for f in dec.features)], dim=1)
    full = torch.cat([x.expand(7, 5, 6, 2), r.expand(7, 5, 6, 3), z.expand(7, 5, 6, 4)], dim=-1)
    h = torch.relu(full @ w.T + dec.input.bias)
    want_loc, raw = dec.net(h).chunk(2, dim=-1)
    torch.testing.assert_close(loc, want_loc)
    torch.testing.assert_close(scale, 0.1 + 0.9 * torch.nn.functional.softplus(raw))


def test_bad_settings():
    with pytest.raises(ValueError, match="min_std"):
        GaussianDecoder(1, (2,), 1, 8, min_std=1.5)
    with pytest.raises(ValueError, match="feature tensors"):
        GaussianDecoder(1, (2,), 1, 8)(torch.randn(3, 1), torch.randn(3, 2), torch.randn(3, 2))
