"""Empirical neural tangent kernel of any ``nn.Module`` and the linearised-network prediction.

The empirical NTK of a network ``f(θ, x)`` is ``Θ(x, x') = J(x) J(x')ᵀ`` with ``J = ∂f/∂θ``
(Jacot et al., arXiv 1806.07572). Gradient descent on the squared loss trains the *linearised*
network ``f(θ0, x) + J(x)(θ - θ0)`` exactly as kernel regression with ``Θ`` at ``θ0``; as the
width grows the real network follows its linearisation and ``Θ`` tends to the analytic
:class:`~priors.kernels.NTKKernel`.

Two ways to compute ``Θ`` with ``torch.func`` (Novak et al., "Fast finite width neural tangent
kernel", arXiv 2206.08720): contracting per-example Jacobians (cheapest when they fit in memory),
or NTK-vector products ``J(x1) [J(x2)ᵀ v]`` by a ``vjp`` followed by a ``jvp`` (memory
independent of the parameter count). ``method="auto"`` picks the first when the Jacobians fit
in ``memory_budget`` bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from inference.checks import check_int, positive_float, renamed_kwargs

__all__ = ["empirical_ntk", "linearize", "ntk_regression"]

#: Jacobians larger than this (bytes) make ``method="auto"`` use NTK-vector products.
DEFAULT_MEMORY_BUDGET = 1 << 29


def _check_batch(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape [n, *input_shape] with a batch dimension, got {list(x.shape)}")


def _trainable(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("model has no parameters with requires_grad=True; the NTK would be zero")
    return params, dict(model.named_buffers())


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    method: str = "auto",
    trace_outputs: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    chunk_size: int | None = None,
) -> Tensor:
    """Empirical NTK ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` over all parameters with ``requires_grad``.

    The model must treat batch entries independently (no batch-norm in training mode).

    Args:
        model: network mapping ``[n, *input_shape]`` to ``[n]`` or ``[n, *output_shape]``.
        x1: ``[n1, *input_shape]``.
        x2: ``[n2, *input_shape]``; default ``x1``.
        method: ``"jacobian"`` (contract per-example Jacobians), ``"ntk_vp"`` (vjp then jvp) or
            ``"auto"`` (Jacobians when ``(n1 + n2) * outputs * num_params`` elements fit
            ``memory_budget`` bytes).
        trace_outputs: sum over the output index (``Θ_{ab} = Σ_o Θ_{ab,oo}``).
        memory_budget: bytes allowed for Jacobians under ``"auto"``.
        chunk_size: vmap chunk size for ``"ntk_vp"`` (bounds memory; default all at once).

    Returns:
        ``[n1, n2]`` for scalar outputs or with ``trace_outputs``; otherwise ``[n1, n2, o, o]``
        with ``o`` the flattened output size.
    """
    _check_batch(x1, "x1")
    same = x2 is None
    x2 = x1 if x2 is None else x2
    _check_batch(x2, "x2")
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 must share the input shape, got {list(x1.shape[1:])} and {list(x2.shape[1:])}")
    params, buffers = _trainable(model)

    def f(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, (p, buffers), (x,)).reshape(x.shape[0], -1)

    num_out = f(params, x1[:1]).shape[-1]
    num_params = sum(p.numel() for p in params.values())
    if method == "auto":
        jac_bytes = (x1.shape[0] + (0 if same else x2.shape[0])) * num_out * num_params * x1.element_size()
        method = "jacobian" if jac_bytes <= memory_budget else "ntk_vp"
    if method == "jacobian":
        ntk = _ntk_jacobian(f, params, x1, None if same else x2)
    elif method == "ntk_vp":
        ntk = _ntk_vp(f, params, x1, x2, num_out, chunk_size)
    else:
        raise ValueError(f"method must be 'auto', 'jacobian' or 'ntk_vp', got {method!r}")
    if trace_outputs or num_out == 1:
        return ntk.diagonal(dim1=-2, dim2=-1).sum(-1)
    return ntk


def _ntk_jacobian(f: Callable, params: dict[str, Tensor], x1: Tensor, x2: Tensor | None) -> Tensor:
    """``[n1, n2, o, o]`` by contracting per-example Jacobians."""

    def f_single(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return f(p, x.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(f_single), (None, 0))
    j1 = jac(params, x1)
    j2 = j1 if x2 is None else jac(params, x2)
    total = None
    for name in params:
        a = j1[name].flatten(2)  # [n1, o, P]
        b = j2[name].flatten(2)
        term = torch.einsum("iop,jqp->ijoq", a, b)
        total = term if total is None else total + term
    return total


def _ntk_vp(
    f: Callable, params: dict[str, Tensor], x1: Tensor, x2: Tensor, num_out: int, chunk_size: int | None
) -> Tensor:
    """``[n1, n2, o, o]`` from NTK-vector products: one vjp through ``x2``, then a jvp through ``x1``."""
    n2 = x2.shape[0]
    _, vjp_fn = vjp(lambda p: f(p, x2), params)

    def column(cotangent: Tensor) -> Tensor:
        (direction,) = vjp_fn(cotangent)
        return jvp(lambda p: f(p, x1), (params,), (direction,))[1]  # [n1, o]

    basis = torch.eye(n2 * num_out, dtype=x1.dtype, device=x1.device).reshape(n2 * num_out, n2, num_out)
    cols = vmap(column, chunk_size=chunk_size)(basis)  # [n2 * o, n1, o]
    return cols.reshape(n2, num_out, x1.shape[0], num_out).permute(2, 0, 3, 1)


def linearize(model: nn.Module) -> tuple[Callable[[dict[str, Tensor], Tensor], Tensor], dict[str, Tensor]]:
    """First-order Taylor expansion of a network in its parameters around their current values.

    Returns:
        ``(f_lin, params0)``: ``f_lin(params, x) = f(params0, x) + J(x) (params - params0)``
        (one ``jvp``, differentiable in ``params``) and a detached copy of the expansion point.
    """
    params0, buffers = _trainable(model)
    params0 = {k: v.clone() for k, v in params0.items()}

    def f(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, (p, buffers), (x,))

    def f_lin(params: dict[str, Tensor], x: Tensor) -> Tensor:
        delta = {k: params[k] - params0[k] for k in params0}
        value, tangent = jvp(lambda p: f(p, x), (params0,), (delta,))
        return value + tangent

    return f_lin, params0


@renamed_kwargs(steps="num_steps")
def ntk_regression(
    k_train: Tensor,
    k_test_train: Tensor,
    y_train: Tensor,
    *,
    f0_train: Tensor | None = None,
    f0_test: Tensor | None = None,
    lr: float | None = None,
    num_steps: int | None = None,
    time: float | None = None,
    ridge: float = 0.0,
) -> Tensor:
    """Prediction of a network trained by gradient descent in the kernel (linearised) regime.

    For the loss ``½ Σ_i (f(x_i) - y_i)²`` the linearised network's training residual follows
    ``r_{t+1} = (I - lr Θ) r_t`` and the test prediction is (arXiv 1806.07572, Lee et al.
    arXiv 1902.06720)::

        f_t(x) = f_0(x) + Θ(x, X) Θ⁻¹ (I - (I - lr Θ)^t) (y - f_0(X))

    With ``time`` instead (gradient flow), ``(I - lr Θ)^t`` becomes ``exp(-time Θ)``; with
    neither, ``t = ∞``: kernel regression ``f_0(x) + Θ(x, X) (Θ + ridge I)⁻¹ (y - f_0(X))``.

    Args:
        k_train: ``[n, n]`` kernel between training inputs (analytic or empirical NTK).
        k_test_train: ``[m, n]``.
        y_train: ``[n]`` or ``[n, k]`` targets.
        f0_train, f0_test: outputs of the network at initialisation (default 0, i.e. the mean
            prediction over initialisations).
        lr, num_steps: learning rate and number of full-batch gradient-descent steps.
        time: gradient-flow time (``lr * num_steps`` in the small-step limit).
        ridge: added to the kernel diagonal (only for the ``t = ∞`` solve).

    Returns:
        ``[m]`` or ``[m, k]`` predictions.
    """
    n = k_train.shape[-1]
    if k_train.shape != (n, n) or k_test_train.dim() != 2 or k_test_train.shape[-1] != n:
        raise ValueError(
            f"k_train must be [n, n] and k_test_train [m, n]; got {list(k_train.shape)} and {list(k_test_train.shape)}"
        )
    if y_train.shape[0] != n or y_train.dim() > 2:
        raise ValueError(f"y_train must be [n] or [n, k] with n = {n}, got {list(y_train.shape)}")
    if (lr is None) != (num_steps is None):
        raise ValueError("give lr and num_steps together (discrete gradient descent), or neither")
    if lr is not None and time is not None:
        raise ValueError("give either (lr, num_steps) or time, not both")
    resid = y_train - (0.0 if f0_train is None else f0_train)
    vec = resid.unsqueeze(-1) if resid.dim() == 1 else resid
    if lr is None and time is None:
        eye = torch.eye(n, dtype=k_train.dtype, device=k_train.device)
        solved = torch.linalg.solve(k_train + ridge * eye, vec)
    else:
        # Θ⁻¹(I - (I - lr Θ)^t) = V diag(g(λ)) Vᵀ; g(λ) -> lr t (or time) as λ -> 0 without a division by 0.
        evals, evecs = torch.linalg.eigh(k_train)
        if time is not None:
            if not time >= 0:
                raise ValueError(f"time must be >= 0, got {time!r}")
            scaled = evals * time
            g = torch.where(scaled.abs() > 1e-12, -torch.expm1(-scaled) / evals, torch.full_like(evals, time))
        else:
            num_steps = check_int(num_steps, "num_steps", 0)
            lr = positive_float(lr, "lr")
            step_evals = lr * evals
            if (step_evals >= 2).any():
                raise ValueError(f"lr={lr} diverges: lr * max eigenvalue of k_train must be < 2")
            growth = -torch.expm1(num_steps * torch.log1p(-step_evals))
            g = torch.where(step_evals.abs() > 1e-12, growth / evals, torch.full_like(evals, lr * num_steps))
        solved = evecs @ (g.unsqueeze(-1) * (evecs.mT @ vec))
    pred = k_test_train @ solved
    pred = pred.squeeze(-1) if resid.dim() == 1 else pred
    return pred + (0.0 if f0_test is None else f0_test)
