"""Polynomial composition activations (PolyCom): PolyReLU and PolyNorm.

Zhuo, Wang, Zeng, Li, Zhou and Ma, "Polynomial Composition Activations: Unleashing the
Dynamics of Large Language Models", ICLR 2025, arXiv:2411.03884.

Both compose a polynomial with a base function and learn its coefficients
``a = (a_0, a_1, ..., a_r)`` (``r = order``):

* ``PolyReLU(x) = sum_{i=0}^{r} a_i ReLU(x)^i``,
* ``PolyNorm(x) = a_0 + sum_{i=1}^{r} a_i * norm(x^i)``, with
  ``norm(u) = u / sqrt(mean(u^2) + eps)`` over the last dimension (an RMS, not an L2 norm).

Either replaces the activation of a transformer's feed-forward block (GELU, SwiGLU).
The coefficients are shared by all channels, start at ``1 / r`` for ``i >= 1`` and at 0 for
the constant ``a_0``, as in the official code (BryceZhuo/PolyCom).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["PolyNorm", "PolyReLU"]


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    return order


def _initial_coefficients(order: int) -> Tensor:
    # The paper's initialisation: equal weights 1/r on the powers, zero constant.
    a = torch.full((order + 1,), 1.0 / order)
    a[0] = 0.0
    return a


# The two Functions below recompute powers in backward from the saved input instead of
# letting autograd keep every intermediate power (which costs 3-5 activation-sized buffers
# at order 3). They are written for torch.func (generate_vmap_rule): in-place updates only
# go into buffers that already depend on every tensor the update reads, so that a vmapped
# input never has to be written into an unbatched buffer.


class _PolyReLUFunction(torch.autograd.Function):
    """``sum_i a_i relu(x)^i`` by Horner's rule; backward from ``x`` and ``a`` alone."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, a: Tensor) -> Tensor:
        r = torch.relu(x)
        out = r * a[-1]
        for i in range(a.shape[0] - 2, 0, -1):
            out.add_(a[i]).mul_(r)
        return out.add_(a[0])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, a = ctx.saved_tensors
        order = a.shape[0] - 1
        r = torch.relu(x)
        grad_a = None
        if ctx.needs_input_grad[1]:
            sums = [g.sum()]
            t = g * r
            sums.append(t.sum())
            for _ in range(2, order + 1):
                sums.append(t.mul_(r).sum())
            del t
            grad_a = torch.stack(sums)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # p'(r) = sum_{i>=1} i a_i r^(i-1), zero where x <= 0 (ReLU's derivative).
            d = r * (order * a[order]) + (order - 1) * a[order - 1] if order > 1 else a[1] * (x > 0).to(x.dtype)
            for i in range(order - 2, 0, -1):
                d.mul_(r).add_(i * a[i])
            if order > 1:
                d.mul_(x > 0)
            grad_x = d * g
        return grad_x, grad_a


def _inv_rms(p: Tensor, eps: float) -> Tensor:
    """``1 / sqrt(mean(p^2) + eps)`` over the last dimension, ``[..., 1]``."""
    return (torch.linalg.vector_norm(p, dim=-1, keepdim=True).square() / p.shape[-1] + eps).rsqrt()


class _PolyNormFunction(torch.autograd.Function):
    """``a_0 + sum_i a_i x^i r_i`` with ``r_i = 1 / RMS(x^i)``; saves ``x``, ``a`` and the ``r_i``.

    Backward: with ``n_i = x^i r_i`` and ``m_i = mean(n_i g)`` over the last dimension,
    ``dL/dx = sum_i i a_i x^(i-1) r_i (g - n_i m_i)`` and ``dL/da_i = sum(n_i g)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, a: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        r = _inv_rms(x, eps)
        out = x * (a[1] * r)
        inv = [r]
        power = x
        for i in range(2, a.shape[0]):
            power = power * x
            r = _inv_rms(power, eps)
            inv.append(r)
            out.add_(power * (a[i] * r))  # (addcmul_ has no vmap batching rule)
        return out.add_(a[0]), torch.cat(inv, -1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        x, a, _ = inputs
        ctx.save_for_backward(x, a, output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor, _: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, a, inv = ctx.saved_tensors
        order = a.shape[0] - 1
        sums = [g.sum()]
        grad_x = None
        prev: Tensor | None = None  # x^(i-1)
        for i in range(1, order + 1):
            r = inv[..., i - 1:i]
            n = x * r if prev is None else prev * x * r
            t = n * g
            sums.append(t.sum())
            m = t.mean(-1, keepdim=True)
            del t
            if ctx.needs_input_grad[0]:
                term = torch.addcmul(g, n, m, value=-1.0).mul_(r)
                if prev is not None:
                    term.mul_(prev)
                grad_x = term * (i * a[i]) if grad_x is None else grad_x.add_(term * (i * a[i]))
                del term
            del n
            prev = x if prev is None else prev * x
        grad_a = torch.stack(sums) if ctx.needs_input_grad[1] else None
        return grad_x, grad_a, None


class PolyReLU(nn.Module):
    """``sum_{i=0}^{order} a_i ReLU(x)^i`` with learnable ``a`` (arXiv:2411.03884).

    Args:
        order: highest power ``r`` (the paper uses 3).

    Shapes:
        ``x``: any shape; the output has the same shape. ``coefficients``: ``[order + 1]``,
        ``coefficients[i]`` multiplies ``ReLU(x)^i`` (``ReLU(x)^0 = 1``, so ``a_0`` is a bias).

    With ``a = (0, 1, 0, ..., 0)`` it is exactly ReLU.
    """

    def __init__(self, order: int = 3) -> None:
        super().__init__()
        self.order = _check_order(order)
        self.coefficients = nn.Parameter(_initial_coefficients(self.order))

    def extra_repr(self) -> str:
        return f"order={self.order}"

    def forward(self, x: Tensor) -> Tensor:
        return _PolyReLUFunction.apply(x, self.coefficients.to(x.dtype))


class PolyNorm(nn.Module):
    """``a_0 + sum_{i=1}^{order} a_i x^i / RMS(x^i)`` with learnable ``a`` (arXiv:2411.03884).

    The RMS is taken over the last dimension, so PolyNorm is invariant to ``x -> c x`` for
    ``c > 0`` (exactly when ``eps = 0``).

    Args:
        order: highest power ``r`` (the paper uses 3).
        eps: added to the mean square before the square root (``>= 0``).

    Shapes:
        ``x``: ``[..., D]``; the output has the same shape. ``coefficients``: ``[order + 1]``,
        ``coefficients[i]`` multiplies ``norm(x^i)`` and ``coefficients[0]`` is the constant.
        (The official snippet orders its 3 weights the other way round, highest power first,
        and keeps the constant separately as ``bias``.)
    """

    def __init__(self, order: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        self.order = _check_order(order)
        if not float(eps) >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)
        self.coefficients = nn.Parameter(_initial_coefficients(self.order))

    def extra_repr(self) -> str:
        return f"order={self.order}, eps={self.eps}"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1:
            raise ValueError("x must have at least one dimension [..., D] (the RMS is over the last one)")
        return _PolyNormFunction.apply(x, self.coefficients.to(x.dtype), self.eps)[0]
