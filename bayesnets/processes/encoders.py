"""The shared building blocks of every neural process in :mod:`bayesnets.processes`.

* :class:`MLP` — the point-wise networks;
* :class:`AttentionBlock` — the Set Transformer's multi-head attention block (Lee et al., 2019,
  arXiv 1810.00825), used for self-attention over the context, the ANP's cross-attention and the
  MPNP generator's induced set attention;
* :class:`SetEncoder` — the deterministic encoder ``r = mean_i φ(x_i, y_i)`` (CNP/NP, Garnelo et al.,
  2018, arXiv 1807.01613 / 1807.01622), optionally with self-attention (ANP, Kim et al., 2019,
  arXiv 1901.05761);
* :class:`AttentiveEncoder` — the ANP's deterministic path: target inputs attend to the context;
* :class:`LatentEncoder` — the NP's Gaussian ``q(z | D)``;
* :class:`PseudoContextGenerator` — the MPNP's exchangeable generator of pseudo-context
  representations (Lee et al., 2023, arXiv 2304.09431).

Shapes: sets are ``[*batch, N, features]``; an empty set (``N = 0``) is allowed everywhere and
contributes nothing (its mean representation is zero and attention over it returns zero), so a
model given no context still predicts — its prior predictive.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal

__all__ = [
    "MIN_LATENT_STD",
    "MLP",
    "AttentionBlock",
    "AttentiveEncoder",
    "LatentEncoder",
    "PseudoContextGenerator",
    "SetEncoder",
    "mean_pool",
]

# Lower bound on the latent standard deviation, σ_z = 0.1 + 0.9 sigmoid(·), as in the NP
# literature's GP benchmarks (Le et al., 2018; juho-lee/bnp): keeps the KL term well behaved.
MIN_LATENT_STD = 0.1


class MLP(nn.Sequential):
    """``depth`` linear layers with ReLUs between them (none after the last).

    Args:
        in_dim: input features.
        hidden: width of the hidden layers.
        out_dim: output features.
        depth: number of linear layers (>= 1).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        dims = [in_dim] + [hidden] * (depth - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(a, b))
            if i < depth - 1:
                layers.append(nn.ReLU())
        super().__init__(*layers)


def mean_pool(h: Tensor) -> Tensor:
    """Mean over the set dimension ``-2``: ``[*batch, N, d] -> [*batch, d]``; zero for an empty set."""
    if h.shape[-2] == 0:
        return h.new_zeros(*h.shape[:-2], h.shape[-1])
    return h.mean(-2)


class AttentionBlock(nn.Module):
    """Multi-head attention block ``MAB(Q, K, V)`` of the Set Transformer (arXiv 1810.00825).

    ``H = LN(Q + Attention(Q, K, V))``, ``out = LN(H + FF(H))``. Equivariant in the queries and
    invariant to a joint permutation of keys and values. With no keys the attention term is
    zero (the block then only transforms the queries).

    Args:
        dim: feature size of queries, keys, values and output.
        num_heads: attention heads (must divide ``dim``).
    """

    def __init__(self, dim: int, num_heads: int = 4) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = MLP(dim, dim, dim, depth=2)

    def _heads(self, t: Tensor) -> Tensor:
        # [*batch, N, dim] -> [*batch, heads, N, dim / heads]
        return t.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor | None = None) -> Tensor:
        """``queries [*batch, Nq, dim]``, ``keys``/``values [*batch, Nk, dim]`` -> ``[*batch, Nq, dim]``."""
        values = keys if values is None else values
        if keys.shape[-2] == 0:
            att = torch.zeros_like(queries)
        else:
            q, k, v = self._heads(self.q(queries)), self._heads(self.k(keys)), self._heads(self.v(values))
            att = self.o(F.scaled_dot_product_attention(q, k, v).transpose(-3, -2).flatten(-2))
        h = self.norm1(queries + att)
        return self.norm2(h + self.ff(h))


class SetEncoder(nn.Module):
    """Deterministic set encoder: per-point features ``φ([x_i, y_i])``, optionally refined by
    self-attention, and their mean ``r``.

    As a deterministic path of a model, :meth:`forward` gives every target the same ``r``.

    Args:
        x_dim: input features.
        y_dim: output features.
        hidden: representation size.
        depth: linear layers of ``φ``.
        self_attention: number of self-attention blocks after ``φ`` (0: plain mean pooling).
        num_heads: attention heads.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int, depth: int = 3, self_attention: int = 0,
                 num_heads: int = 4) -> None:
        super().__init__()
        self.embed = MLP(x_dim + y_dim, hidden, hidden, depth)
        self.attention = nn.ModuleList(AttentionBlock(hidden, num_heads) for _ in range(self_attention))

    def points(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-point representations: ``x [*b, N, x_dim]``, ``y [*b, N, y_dim]`` -> ``[*b, N, hidden]``."""
        h = self.embed(torch.cat([x, y], dim=-1))
        for block in self.attention:
            h = block(h, h)
        return h

    def pooled(self, x: Tensor, y: Tensor) -> Tensor:
        """The set representation ``r``: ``[*b, hidden]`` (zero for an empty set)."""
        return mean_pool(self.points(x, y))

    def forward(self, context_x: Tensor, context_y: Tensor, target_x: Tensor) -> Tensor:
        """``r`` for every target, as ``[*b, 1, hidden]`` (broadcasts over the ``Nt`` targets)."""
        return self.pooled(context_x, context_y).unsqueeze(-2)


class AttentiveEncoder(nn.Module):
    """The ANP's deterministic path (arXiv 1901.05761): each target input attends to the
    context inputs (keys) and their self-attended representations (values).

    Args:
        x_dim, y_dim, hidden, depth, num_heads: as in :class:`SetEncoder`.
        self_attention: self-attention blocks over the context representations.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int, depth: int = 3, self_attention: int = 2,
                 num_heads: int = 4) -> None:
        super().__init__()
        self.values = SetEncoder(x_dim, y_dim, hidden, depth, self_attention, num_heads)
        # Keys and queries share one embedding of x, so a target at a context input matches it.
        self.embed_x = MLP(x_dim, hidden, hidden, depth=2)
        self.cross = AttentionBlock(hidden, num_heads)

    def forward(self, context_x: Tensor, context_y: Tensor, target_x: Tensor) -> Tensor:
        """Target-specific representations ``[*b, Nt, hidden]``."""
        values = self.values.points(context_x, context_y)
        return self.cross(self.embed_x(target_x), self.embed_x(context_x), values)


class LatentEncoder(nn.Module):
    """The NP's latent encoder ``q(z | D) = N(μ(r), σ(r)²)`` with ``r`` a :class:`SetEncoder` mean.

    ``q(z | ∅)`` (empty set) is a learned prior. ``σ = 0.1 + 0.9 sigmoid(·)`` (see
    :data:`MIN_LATENT_STD`).

    Args:
        x_dim, y_dim, hidden, depth, self_attention, num_heads: as in :class:`SetEncoder`.
        latent_dim: size of ``z``.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int, latent_dim: int, depth: int = 3,
                 self_attention: int = 0, num_heads: int = 4) -> None:
        super().__init__()
        self.set = SetEncoder(x_dim, y_dim, hidden, depth, self_attention, num_heads)
        self.head = MLP(hidden, hidden, 2 * latent_dim, depth=2)

    def forward(self, x: Tensor, y: Tensor) -> Normal:
        """``q(z | {(x_i, y_i)})`` with batch shape ``[*b, latent_dim]``."""
        loc, raw = self.head(self.set.pooled(x, y)).chunk(2, dim=-1)
        return Normal(loc, MIN_LATENT_STD + (1.0 - MIN_LATENT_STD) * torch.sigmoid(raw), validate_args=False)


class PseudoContextGenerator(nn.Module):
    """The MPNP's exchangeable generator of pseudo-context representations (arXiv 2304.09431).

    Given context representations ``S_c = {s_i}`` and i.i.d. noise ``ε_1..ε_m ~ N(0, I)``, it
    returns ``s̃_j = h(ε_j; S_c, ε_{1:m})`` with induced set attention blocks (ISAB, Set
    Transformer, arXiv 1810.00825) whose inducing points are conditioned on the context. Per
    layer: the learned inducing points read the context (``I_c = MAB(I, S_c)``, once per task),
    then gather the pseudo tokens (``H = MAB(I_c, T)``) and the tokens read back
    (``T = MAB(T, H)``); ``T`` starts as the embedded noise. No positional information enters,
    so permuting the noise permutes the outputs — the generated pseudo-context set is
    exchangeable, the condition (c.i.d. predictive) under which its spread is a martingale
    posterior — and the output does not depend on the order of the context. An empty context
    is allowed: the pseudo points then come from the generator's learned "prior".

    Args:
        hidden: representation size (of ``S_c`` and of the outputs).
        noise_dim: size of each ``ε_j``.
        num_inducing: inducing points per ISAB layer.
        num_layers: ISAB layers.
        num_heads: attention heads.
    """

    def __init__(self, hidden: int, noise_dim: int = 32, num_inducing: int = 16, num_layers: int = 2,
                 num_heads: int = 4) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.noise_dim = noise_dim
        self.embed_noise = MLP(noise_dim, hidden, hidden, depth=2)
        self.inducing = nn.Parameter(torch.randn(num_layers, num_inducing, hidden) / math.sqrt(hidden))
        self.read_context = nn.ModuleList(AttentionBlock(hidden, num_heads) for _ in range(num_layers))
        self.gather = nn.ModuleList(AttentionBlock(hidden, num_heads) for _ in range(num_layers))
        self.scatter = nn.ModuleList(AttentionBlock(hidden, num_heads) for _ in range(num_layers))
        self.out = nn.Linear(hidden, hidden)

    def sample_noise(self, context: Tensor, num_sets: int, num_pseudo: int) -> Tensor:
        """``ε`` for ``num_sets`` pseudo-contexts of ``num_pseudo`` points: ``[num_sets, *b, m, noise_dim]``,
        on the device and dtype of ``context [*b, Nc, hidden]``."""
        return torch.randn(num_sets, *context.shape[:-2], num_pseudo, self.noise_dim,
                           device=context.device, dtype=context.dtype)

    def forward(self, context: Tensor, noise: Tensor) -> Tensor:
        """Pseudo-context representations.

        Args:
            context: ``[*b, Nc, hidden]`` context representations (``Nc`` may be 0).
            noise: ``[K, *b, m, noise_dim]``, one row per pseudo point, ``K`` independent sets.

        Returns:
            ``[K, *b, m, hidden]``.
        """
        t = self.embed_noise(noise)
        for inducing, read, gather, scatter in zip(self.inducing, self.read_context, self.gather, self.scatter):
            conditioned = read(inducing.expand(*context.shape[:-2], *inducing.shape), context)
            summary = gather(conditioned.expand(t.shape[0], *conditioned.shape), t)
            t = scatter(t, summary)
        return self.out(t)
