"""The shared toolkit: permutation symmetries, empty sets, and the MPNP generator's exchangeability."""

from __future__ import annotations

import torch

from bayesnets.processes.encoders import (
    MLP,
    AttentionBlock,
    AttentiveEncoder,
    LatentEncoder,
    PseudoContextGenerator,
    SetEncoder,
    mean_pool,
)


def test_mlp_and_mean_pool(tkwargs):
    net = MLP(3, 8, 2, depth=3).to(**tkwargs)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 3
    assert net(torch.randn(4, 3, **tkwargs)).shape == (4, 2)
    h = torch.randn(2, 0, 5, **tkwargs)
    torch.testing.assert_close(mean_pool(h), torch.zeros(2, 5, **tkwargs))


def test_attention_block_symmetries(tkwargs):
    block = AttentionBlock(16, num_heads=4).to(**tkwargs)
    q, kv = torch.randn(3, 5, 16, **tkwargs), torch.randn(3, 7, 16, **tkwargs)
    out = block(q, kv)
    pq, pk = torch.randperm(5), torch.randperm(7)
    torch.testing.assert_close(block(q[:, pq], kv), out[:, pq])  # equivariant in the queries
    torch.testing.assert_close(block(q, kv[:, pk]), out)  # invariant in the keys
    empty = block(q, kv[:, :0])
    assert empty.shape == q.shape and torch.isfinite(empty).all()


def test_set_encoders_are_permutation_invariant(tkwargs):
    cx, cy, tx = torch.randn(2, 9, 1, **tkwargs), torch.randn(2, 9, 1, **tkwargs), torch.randn(2, 4, 1, **tkwargs)
    perm = torch.randperm(9)
    for enc in (SetEncoder(1, 1, 16, self_attention=1), AttentiveEncoder(1, 1, 16)):
        enc = enc.to(**tkwargs)
        out = enc(cx, cy, tx)
        torch.testing.assert_close(enc(cx[:, perm], cy[:, perm], tx), out)
        assert torch.isfinite(enc(cx[:, :0], cy[:, :0], tx)).all()
    lat = LatentEncoder(1, 1, 16, latent_dim=3).to(**tkwargs)
    q = lat(cx, cy)
    assert q.batch_shape == (2, 3) and (q.scale >= 0.1).all()
    torch.testing.assert_close(lat(cx[:, perm], cy[:, perm]).loc, q.loc)


def test_generator_is_exchangeable(tkwargs):
    gen = PseudoContextGenerator(16, noise_dim=4, num_inducing=3).to(**tkwargs)
    context = torch.randn(2, 6, 16, **tkwargs)
    noise = gen.sample_noise(context, num_sets=5, num_pseudo=8)
    assert noise.shape == (5, 2, 8, 4)
    out = gen(context, noise)
    assert out.shape == (5, 2, 8, 16)
    perm = torch.randperm(8)
    # Permuting the noise inputs permutes the generated pseudo points ...
    torch.testing.assert_close(gen(context, noise[:, :, perm]), out[:, :, perm])
    # ... the context order does not matter ...
    torch.testing.assert_close(gen(context[:, torch.randperm(6)], noise), out)
    # ... and the output depends on the noise and on the context (not a degenerate generator).
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert (gen(context + 1.0, noise) - out).abs().max() > 1e-3
    prior = gen(context[:, :0], noise)
    assert prior.shape == out.shape and torch.isfinite(prior).all()
