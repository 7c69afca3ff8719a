"""MgNO: neural operators whose linear maps are multigrid V-cycles of convolutions.

He, Liu and Xu, "MgNO: Efficient Parameterization of Linear Operators via Multigrid",
ICLR 2024, arXiv:2310.19809 (P18).

:class:`MgConv2d` is one V-cycle with learnable stencils. On each level ``l`` (grid
``H / 2^l``):

* smoothing: ``u <- u + S(f - A u)`` (``A``: ``c_u -> c_f``, ``S``: ``c_f -> c_u``, 3x3
  convolutions); the very first step on the finest level starts from nothing, ``u = S f``;
* restriction to the next level: ``f' = R f`` (or ``R (f - A u)``, the residual, with
  ``use_res``) and ``u' = Pi u`` (``R``, ``Pi``: 3x3 convolutions with stride 2);
* on the way up: ``u <- u + RT(u_coarse)`` (4x4 transposed convolution, stride 2), then
  post-smoothing steps.

With the classical choices (:meth:`MgConv2d.load_poisson_multigrid_`: 5-point Laplacian
``A``, damped-Jacobi ``S``, restriction of the residual, ``Pi = 0``, bilinear ``RT``) the
layer *is* a geometric multigrid V-cycle for Poisson's equation; learning the stencils
generalises it. :class:`MgNO` stacks ``u <- act(MgConv(u) + W u + b)`` (``W`` a 1x1
convolution) with no lifting layer, as in the official ``MgNO_DC``.

Two grid conventions (``grid=``), both from the official code:

* ``"cell"`` (``MgConv_DC``, the Darcy/Navier-Stokes models): sides divisible by
  ``2^(levels - 1)``; restriction is a stride-2 3x3 convolution with padding 1 and
  prolongation a 4x4 stride-2 transposed convolution (``64 -> 32 -> ... ``);
* ``"vertex"`` (``MgConv_helm``): sides ``m 2^(levels - 1) - 1`` (``63 -> 31 -> 15 ...``);
  restriction is a stride-2 3x3 convolution without padding and prolongation a 3x3
  stride-2 transposed convolution, so coarse nodes sit on fine nodes and, with zero
  padding, every level puts its Dirichlet boundary in the same place. Classical multigrid
  needs these nested grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

__all__ = ["DARCY_ITERS", "MgConv2d", "MgNO"]

#: The official Darcy configuration's smoothing counts (pre, post) for 6 levels.
DARCY_ITERS = ((1, 0),) * 5 + ((2, 0),)

#: Damped-Jacobi weight for the 5-point Laplacian: 4/5 minimises the 2-D smoothing factor
#: (Trottenberg, Oosterlee and Schueller, "Multigrid", 2001, section 2.1).
JACOBI_DAMPING = 0.8


#: Grid conventions: (padding of the stride-2 restriction, kernel size of the prolongation).
GRIDS = {"cell": (1, 4), "vertex": (0, 3)}


def _conv(c_in: int, c_out: int, stride: int, bias: bool, padding_mode: str, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=padding, bias=bias,
                     padding_mode=padding_mode)


class _Smoother(nn.Module):
    """``u <- u + S(f - A u)``; without ``A`` (the first step) ``u = S f``."""

    def __init__(self, c_u: int, c_f: int, first: bool, bias: bool, padding_mode: str) -> None:
        super().__init__()
        self.A = None if first else _conv(c_u, c_f, 1, bias, padding_mode)
        self.S = _conv(c_f, c_u, 1, bias, padding_mode)

    def forward(self, u: Tensor | None, f: Tensor) -> Tensor:
        if self.A is None or u is None:
            return self.S(f)
        return u + self.S(f - self.A(u))


class _Restriction(nn.Module):
    """``(u, f) -> (Pi u, R f)`` or, with ``use_res``, ``(Pi u, R (f - A u))``."""

    def __init__(self, c_u: int, c_f: int, use_res: bool, bias: bool, padding_mode: str, padding: int) -> None:
        super().__init__()
        self.A = _conv(c_u, c_f, 1, bias, padding_mode) if use_res else None
        self.Pi = _conv(c_u, c_u, 2, False, padding_mode, padding)
        self.R = _conv(c_f, c_f, 2, False, padding_mode, padding)

    def forward(self, u: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        if self.A is not None:
            f = f - self.A(u)
        return self.Pi(u), self.R(f)


Iters = Sequence[Sequence[int]] | Sequence[int]


def _parse_iters(iters: Iters, levels: int) -> list[tuple[int, int]]:
    if len(iters) == 2 and all(isinstance(i, int) for i in iters):
        iters = [tuple(iters)] * levels  # one (pre, post) pair for every level
    pairs = [tuple(int(v) for v in it) for it in iters]  # type: ignore[union-attr]
    if len(pairs) != levels or any(len(p) != 2 or min(p) < 0 for p in pairs):
        raise ValueError(
            f"iters must be one (pre, post) pair or {levels} pairs of non-negative ints (one per level), got {iters}"
        )
    if pairs[0][0] < 1:
        raise ValueError(f"the finest level needs at least one pre-smoothing step (iters[0][0] >= 1), got {pairs[0]}")
    return pairs  # type: ignore[return-value]


class MgConv2d(nn.Module):
    """One multigrid V-cycle with learnable convolution stencils (arXiv:2310.19809).

    Args:
        c_u: channels of the solution ``u`` (output channels).
        c_f: channels of the right-hand side ``f`` (input channels).
        levels: grid levels (the coarsest grid is ``H / 2^(levels - 1)``).
        iters: ``(pre, post)`` smoothing steps, one pair for all levels or one per level
            (default: ``(1, 0)`` on every level but the coarsest, which gets ``(2, 0)``; with
            6 levels this is the official Darcy setting :data:`DARCY_ITERS`).
        use_res: restrict the residual ``f - A u`` rather than ``f``.
        bias: biases in the smoothing convolutions.
        padding_mode: ``"zeros"`` (Dirichlet-like) or ``"circular"`` (periodic), ...
        grid: ``"cell"`` (sides ``m 2^(levels-1)``) or ``"vertex"`` (sides ``m 2^(levels-1) - 1``);
            see the module docstring.

    Shapes:
        ``forward``: ``[N, c_f, H, W] -> [N, c_u, H, W]``.
    """

    def __init__(self, c_u: int, c_f: int, levels: int = 4, iters: Iters | None = None, use_res: bool = False,
                 bias: bool = False, padding_mode: str = "zeros", grid: str = "cell") -> None:
        super().__init__()
        if int(c_u) < 1 or int(c_f) < 1:
            raise ValueError(f"c_u and c_f must be >= 1, got {c_u} and {c_f}")
        if int(levels) < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {sorted(GRIDS)}, got {grid!r}")
        self.c_u, self.c_f, self.levels, self.use_res = int(c_u), int(c_f), int(levels), bool(use_res)
        self.grid, self.padding_mode = grid, padding_mode
        pad, prolong_kernel = GRIDS[grid]
        if iters is None:
            iters = ((1, 0),) * (self.levels - 1) + ((2, 0),)
        self.iters = _parse_iters(iters, self.levels)
        self.pre = nn.ModuleList(
            nn.ModuleList(_Smoother(c_u, c_f, first=(lvl == 0 and i == 0), bias=bias, padding_mode=padding_mode)
                          for i in range(pre))
            for lvl, (pre, _) in enumerate(self.iters)
        )
        self.post = nn.ModuleList(
            nn.ModuleList(_Smoother(c_u, c_f, first=False, bias=bias, padding_mode=padding_mode) for _ in range(post))
            for _, post in self.iters[:-1]  # nothing comes up into the coarsest level
        )
        self.restrict = nn.ModuleList(
            _Restriction(c_u, c_f, use_res, bias, padding_mode, pad) for _ in range(self.levels - 1)
        )
        self.prolong = nn.ModuleList(
            nn.ConvTranspose2d(c_u, c_u, kernel_size=prolong_kernel, stride=2, padding=pad, bias=False)
            for _ in range(self.levels - 1)
        )

    def forward(self, f: Tensor) -> Tensor:
        if f.dim() != 4 or f.shape[1] != self.c_f:
            raise ValueError(f"f must have shape [N, {self.c_f}, H, W], got {tuple(f.shape)}")
        div = 2 ** (self.levels - 1)
        extra = 1 if self.grid == "vertex" else 0
        if any((side + extra) % div or side + extra < (2 if extra else 1) * div for side in f.shape[-2:]):
            want = f"m * {div} - 1 with m >= 2" if extra else f"a multiple of {div}"
            raise ValueError(f"{self.grid}-grid sides must be {want} (levels={self.levels}), got {tuple(f.shape[-2:])}")
        u: Tensor | None = None
        us, fs = [], []
        for lvl in range(self.levels):  # down: pre-smooth, then restrict
            if lvl > 0:
                u, f = self.restrict[lvl - 1](u, f)
            for smoother in self.pre[lvl]:
                u = smoother(u, f)
            us.append(u)
            fs.append(f)
        u = us[-1]
        for lvl in range(self.levels - 2, -1, -1):  # up: add the prolongated coarse result, post-smooth
            u = us[lvl] + self.prolong[lvl](u)
            for smoother in self.post[lvl]:
                u = smoother(u, fs[lvl])
        return u  # type: ignore[return-value]

    @torch.no_grad()
    def load_poisson_multigrid_(self, damping: float = JACOBI_DAMPING) -> MgConv2d:
        """Set the classical geometric-multigrid weights for the 5-point Poisson problem.

        Each channel becomes an independent V-cycle for ``L u = f`` with ``L`` the
        unscaled 5-point stencil (``L = h^2 (-Laplace_h)``, zero Dirichlet through the zero
        padding). It needs ``c_u == c_f``, ``use_res=True``, zero padding and the nested
        ``grid="vertex"`` hierarchy (on the ``"cell"`` grid the zero padding puts each
        level's boundary in a different place and the cycle stalls):

        * ``A`` = the 5-point stencil on every level (rediscretisation; with unscaled
          stencils the coarse right-hand side carries the factor ``(2h)^2 / h^2 = 4``);
        * ``S`` = damped Jacobi, ``damping / 4`` times the identity;
        * ``R`` = full weighting ``[1 2 1; 2 4 2; 1 2 1] / 16`` times that factor 4;
        * ``RT`` = bilinear interpolation ``[1/2 1 1/2]`` per axis;
        * ``Pi = 0`` (coarse levels solve for the correction, starting from zero).

        Returns:
            ``self``.
        """
        if self.c_u != self.c_f or not self.use_res or self.grid != "vertex" or self.padding_mode != "zeros":
            raise ValueError(
                "classical multigrid weights need c_u == c_f, use_res=True, grid='vertex' and "
                f"padding_mode='zeros', got c_u={self.c_u}, c_f={self.c_f}, use_res={self.use_res}, "
                f"grid={self.grid!r}, padding_mode={self.padding_mode!r}"
            )
        if not 0 < float(damping) <= 1:
            raise ValueError(f"damping must be in (0, 1], got {damping}")
        ref = self.pre[0][0].S.weight
        eye = torch.eye(self.c_u, dtype=ref.dtype, device=ref.device)[:, :, None, None]
        stencil = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
        jacobi = torch.zeros(3, 3)
        jacobi[1, 1] = float(damping) / 4
        hat = torch.tensor([0.5, 1.0, 0.5])
        full_weighting = torch.outer(hat, hat) / 4 * 4  # [1 2 1]^2 / 16, times the coarse-scaling 4
        bilinear = torch.outer(hat, hat)

        def put(conv: nn.Module, kernel: Tensor) -> None:
            conv.weight.copy_(eye * kernel.to(eye))  # the same stencil on every channel, no mixing
            if getattr(conv, "bias", None) is not None:
                conv.bias.zero_()

        for level in (*self.pre, *self.post):
            for sm in level:
                put(sm.S, jacobi)
                if sm.A is not None:
                    put(sm.A, stencil)
        for rs in self.restrict:
            put(rs.A, stencil)
            put(rs.R, full_weighting)
            rs.Pi.weight.zero_()
        for rt in self.prolong:
            put(rt, bilinear)
        return self


class MgNO(nn.Module):
    """The MgNO network: ``u <- act(MgConv2d(u) + W u + b)`` layers, then a 1x1 projection.

    Args:
        in_channels: input fields (e.g. 1 for the Darcy coefficient).
        out_channels: output fields.
        width: channels of every hidden layer.
        num_layers: stacked MgConv layers.
        levels, iters, use_res, padding_mode: as in :class:`MgConv2d` (the defaults give the
            official Darcy setting).
        activation: ``"gelu"``, ``"relu"``, ``"tanh"`` or ``"silu"``.

    Shapes:
        ``forward``: ``[N, in_channels, H, W] -> [N, out_channels, H, W]``.
    """

    _ACTIVATIONS: ClassVar[dict[str, type[nn.Module]]] = {
        "gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU,
    }

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 24, num_layers: int = 4,
                 levels: int = 6, iters: Iters | None = None,
                 use_res: bool = False, padding_mode: str = "zeros", activation: str = "gelu") -> None:
        super().__init__()
        if activation not in self._ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(self._ACTIVATIONS)}, got {activation!r}")
        if int(num_layers) < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        chans = [int(in_channels)] + [int(width)] * int(num_layers)
        self.convs = nn.ModuleList(
            MgConv2d(width, c_in, levels, iters, use_res, padding_mode=padding_mode) for c_in in chans[:-1]
        )
        self.linears = nn.ModuleList(nn.Conv2d(c_in, width, kernel_size=1) for c_in in chans[:-1])
        self.project = nn.Conv2d(width, int(out_channels), kernel_size=1, bias=False)
        self.act = self._ACTIVATIONS[activation]()

    def forward(self, u: Tensor) -> Tensor:
        for conv, lin in zip(self.convs, self.linears):
            u = self.act(conv(u) + lin(u))
        return self.project(u)
