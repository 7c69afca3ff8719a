"""The decoder shared by every neural process: ``p(y | x, features) = N(μ, σ²)`` per target.

The standard deviation is bounded below, ``σ = 0.1 + 0.9 softplus(·)`` (Le et al., 2018,
"Empirical evaluation of neural process objectives"; used by juho-lee/bnp and the MPNP paper's
baselines, arXiv 2304.09431), which keeps early training from collapsing onto the context.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bayesnets.processes.encoders import MLP

__all__ = ["MIN_STD", "GaussianDecoder"]

MIN_STD = 0.1


class GaussianDecoder(nn.Module):
    """Maps a target input and its features to a Gaussian over ``y``.

    The first layer acts on ``[x, f_1, f_2, ...]`` but is computed as ``W_x x + Σ_i W_i f_i`` with
    broadcasting, so a representation shared by all targets (``r``, ``z``, ``θ``: shape
    ``[..., 1, f]``) is transformed once per task and draw instead of once per target point.

    Args:
        x_dim: input features.
        feature_dims: sizes of the feature tensors fed with each target.
        y_dim: output features.
        hidden: width of the hidden layers.
        depth: linear layers (>= 2).
        min_std: lower bound on the predictive standard deviation (see the module docstring).
    """

    def __init__(self, x_dim: int, feature_dims: tuple[int, ...], y_dim: int, hidden: int, depth: int = 3,
                 min_std: float = MIN_STD) -> None:
        super().__init__()
        if not 0.0 <= min_std < 1.0:
            raise ValueError(f"min_std must be in [0, 1), got {min_std}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.min_std = float(min_std)
        self.input = nn.Linear(x_dim, hidden)
        self.features = nn.ModuleList(nn.Linear(d, hidden, bias=False) for d in feature_dims)
        self.net = MLP(hidden, hidden, 2 * y_dim, depth - 1)

    def forward(self, x: Tensor, *features: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation per target.

        Args:
            x: ``[*b, Nt, x_dim]``.
            *features: one tensor per ``feature_dims`` entry, each broadcastable to
                ``[*s, *b, Nt, d_i]`` (leading sample dims and a point dim of 1 allowed).

        Returns:
            ``(loc, scale)``, each ``[*s, *b, Nt, y_dim]``.
        """
        if len(features) != len(self.features):
            raise ValueError(f"expected {len(self.features)} feature tensors, got {len(features)}")
        h = self.input(x)
        for layer, f in zip(self.features, features):
            h = h + layer(f)
        loc, raw = self.net(F.relu(h)).chunk(2, dim=-1)
        return loc, self.min_std + (1.0 - self.min_std) * F.softplus(raw)
