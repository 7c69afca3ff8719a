"""Power normalization (PowerNorm), a batch normalization for transformers.

Shen, Yao, Gholami, Mahoney and Keutzer, "PowerNorm: Rethinking Batch Normalization in
Transformers", ICML 2020, arXiv:2003.07845.

PowerNorm changes batch normalization in three ways:

1. **relaxed zero mean**: no mean is subtracted; each channel is divided by its quadratic
   mean (RMS) only;
2. **running quadratic mean**: after a warm-up, the forward pass divides by the running
   quadratic mean ``psi^2`` of earlier batches instead of the current batch's, so noisy NLP
   batch statistics do not reach the output;
3. **approximate backward**: the term that batch statistics add to the gradient is replaced
   by a running estimate ``nu`` (a custom autograd Function), which keeps the gradient
   bounded.

For a channel with (non-padded) batch rows ``x_b``, ``z = x / sqrt(s^2 + eps)`` with
``s^2 = mean_b x_b^2`` during warm-up and ``s^2 = psi^2_{t-1}`` after it, and
``y = gamma * z + beta``. Backward, with ``g = gamma * dL/dy``::

    g~ = g - nu_{t-1} * z                     (valid rows; padded rows keep g)
    dL/dx = g~ / sqrt(s^2 + eps)
    nu_t = nu_{t-1} * (1 - (1 - alpha_bkw) * Gamma) + (1 - alpha_bkw) * Lambda,
    Gamma = mean_b z^2,  Lambda = mean_b g * z.

At a fixed point ``nu = Lambda / Gamma`` this is exactly the gradient of
``x / sqrt(mean_b x^2)`` (up to the ``eps / s^2`` relative term), i.e. of batch RMS
normalization; the running ``nu`` smooths it across batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["PowerNorm"]


def _token_rms_inverse(x: Tensor, groups: int, eps: float) -> Tensor:
    """``1 / sqrt(mean(x^2) + eps)`` over each token's channel groups: ``[M, C] -> [M, groups, 1]``."""
    xg = x.unflatten(-1, (groups, -1))
    # vector_norm reduces without materialising x^2 (one activation-sized buffer fewer);
    # out of place, so that autograd can differentiate it in eval mode.
    return (torch.linalg.vector_norm(xg, dim=-1, keepdim=True).square() / xg.shape[-1] + eps).rsqrt()


class _PowerNormFunction(torch.autograd.Function):
    """Per-token group scaling, then ``weight * u / scale + bias``, with PowerNorm's backward.

    Inputs are flattened to rows: ``x`` ``[M, C]``; ``inv_rms`` ``[M, G, 1]`` (the per-token
    group scaling ``u = x * inv_rms``, or None for none); ``valid`` ``[M, 1]`` (1.0 for rows
    in the statistics, 0.0 for padding; None: all rows); ``scale`` ``[C]`` =
    ``sqrt(s^2 + eps)``; ``running_nu`` ``[C]`` (updated in place during backward).

    Only ``x`` (the input, alive anyway) and the small statistics are saved; ``u`` and ``z``
    are recomputed in backward, which keeps the layer's activation memory near LayerNorm's.
    The group scaling's gradient is folded in: for ``u = r x`` with ``r = (mean x^2 + eps)^-1/2``
    over a group, ``dL/dx = r (dL/du - u mean(u dL/du))``, and ``u dL/du = z g~``.
    """

    @staticmethod
    def forward(x: Tensor, inv_rms: Tensor | None, valid: Tensor | None, scale: Tensor, weight: Tensor | None,
                bias: Tensor | None, running_nu: Tensor, alpha_bkw: float) -> Tensor:
        out = x.clone() if inv_rms is None else (x.unflatten(-1, (inv_rms.shape[1], -1)) * inv_rms).flatten(-2)
        out.div_(scale)
        if weight is not None:
            out.mul_(weight).add_(bias)
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, inv_rms, valid, scale, weight, bias, running_nu, alpha_bkw = inputs
        ctx.save_for_backward(x, inv_rms, valid, scale, weight)
        ctx.running_nu = running_nu
        ctx.alpha_bkw = alpha_bkw
        ctx.has_bias = bias is not None

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, inv_rms, valid, scale, weight = ctx.saved_tensors
        nu: Tensor = ctx.running_nu
        rows = x.shape[0] if valid is None else valid.sum().clamp_min(1.0)
        z = x.clone() if inv_rms is None else (x.unflatten(-1, (inv_rms.shape[1], -1)) * inv_rms).flatten(-2)
        z.div_(scale)
        tmp = torch.mul(grad_y, z)
        grad_w = tmp.sum(0) if weight is not None and ctx.needs_input_grad[4] else None
        grad_b = grad_y.sum(0) if ctx.has_bias and ctx.needs_input_grad[5] else None
        g = grad_y.clone() if weight is None else grad_y * weight
        # Statistics of the valid rows: Lambda = mean(g z), Gamma = mean(z^2).
        torch.mul(g, z, out=tmp)
        lam = (tmp if valid is None else tmp.mul_(valid)).sum(0) / rows
        torch.mul(z, z, out=tmp)
        gamma = (tmp if valid is None else tmp.mul_(valid)).sum(0) / rows
        # g~ = g - nu_{t-1} z: the running estimate of the batch-statistics term replaces the
        # exact -z mean(g z) / mean(z^2); padded rows never entered the statistics.
        torch.mul(z, nu, out=tmp)
        g.sub_(tmp if valid is None else tmp.mul_(valid))
        if inv_rms is not None:
            shape = (inv_rms.shape[1], -1)
            mean_ug = torch.mul(z, g, out=tmp).unflatten(-1, shape).mean(-1, keepdim=True)
            g.div_(scale)  # dL/du
            torch.mul(z, scale, out=tmp)  # u
            g.unflatten(-1, shape).sub_(tmp.unflatten(-1, shape).mul_(mean_ug)).mul_(inv_rms)
        else:
            g.div_(scale)
        rate = 1.0 - ctx.alpha_bkw
        nu.mul_(1.0 - rate * gamma).add_(rate * lam)
        return g, None, None, None, grad_w, grad_b, None, None

    @staticmethod
    def vmap(info: Any, in_dims: Any, *args: Any) -> Any:
        raise RuntimeError(
            "PowerNorm in training mode cannot be vmapped: its running statistics are one shared "
            "state, not one per vmapped draw. Call .eval() on the network (or the BayesianNet) "
            "before vectorised prediction."
        )


class PowerNorm(nn.Module):
    """Power normalization over the last (channel) dimension; a drop-in for LayerNorm/BatchNorm.

    Statistics are taken over every leading dimension (tokens and batch) of the non-padded
    rows, per channel. Training mode uses the batch quadratic mean for the first
    ``warmup_iters`` calls and the running one after; eval mode always uses the running
    quadratic mean, so it is per-token and independent of the batch.

    Following the official code (sIncerass/powernorm, ``MaskPowerNorm``), each token is first
    divided by its own RMS over groups of channels (``group_num`` groups; ``None`` turns this
    off), which makes the layer invariant to the scale of each token.

    Args:
        num_features: channels ``C`` (size of the last input dimension).
        eps: added to quadratic means before the square root.
        alpha_fwd: running-average factor of the quadratic mean ``psi^2``.
        alpha_bkw: running-average factor of the gradient statistic ``nu``.
        warmup_iters: training calls that use batch statistics in the forward pass
            (``psi^2`` is then the plain average of their batch quadratic means).
        group_num: groups for the per-token RMS pre-scaling; ``None`` for none.
        affine: learn a per-channel scale ``weight`` and shift ``bias``.

    Shapes:
        ``x``: ``[..., C]`` with at least two dimensions (e.g. ``[T, B, C]``, ``[B, T, C]``
        or ``[N, C]``); ``pad_mask``: ``x.shape[:-1]``, bool, ``True`` at padding.

    Under ``torch.func.vmap`` (``BayesianNet.predict_f``) only eval mode works: training mode
    updates one shared running state and raises a ``RuntimeError`` there.

    Example:
        >>> norm = PowerNorm(512, warmup_iters=4000)
        >>> y = norm(x, pad_mask=tokens.eq(pad_id))   # x: [B, T, 512], tokens: [B, T]
    """

    def __init__(self, num_features: int, eps: float = 1e-5, alpha_fwd: float = 0.9, alpha_bkw: float = 0.9,
                 warmup_iters: int = 10000, group_num: int | None = 1, affine: bool = True) -> None:
        super().__init__()
        if int(num_features) < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features}")
        if not 0.0 <= float(alpha_fwd) < 1.0 or not 0.0 <= float(alpha_bkw) < 1.0:
            raise ValueError(f"alpha_fwd and alpha_bkw must be in [0, 1), got {alpha_fwd} and {alpha_bkw}")
        if not float(eps) > 0.0:
            raise ValueError(f"eps must be positive, got {eps}")
        if int(warmup_iters) < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
        if group_num is not None and (int(group_num) < 1 or num_features % int(group_num)):
            raise ValueError(f"group_num must divide num_features={num_features}, got {group_num}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.alpha_fwd = float(alpha_fwd)
        self.alpha_bkw = float(alpha_bkw)
        self.warmup_iters = int(warmup_iters)
        self.group_num = None if group_num is None else int(group_num)
        self.affine = bool(affine)
        if self.affine:
            self.weight = nn.Parameter(torch.ones(self.num_features))
            self.bias = nn.Parameter(torch.zeros(self.num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_phi", torch.ones(self.num_features))  # psi^2
        self.register_buffer("running_nu", torch.zeros(self.num_features))  # nu
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, alpha_fwd={self.alpha_fwd}, alpha_bkw={self.alpha_bkw}, "
                f"warmup_iters={self.warmup_iters}, group_num={self.group_num}, affine={self.affine}")

    def reset_running_stats(self) -> None:
        """Back to ``psi^2 = 1``, ``nu = 0`` and the start of warm-up."""
        self.running_phi.fill_(1.0)
        self.running_nu.zero_()
        self.num_batches_tracked.zero_()

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Normalize ``x`` ``[..., C]``; ``pad_mask`` ``x.shape[:-1]`` marks padding with ``True``."""
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[-1] != self.num_features:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [..., {self.num_features}] with at least 2 dims, got {got}")
        if pad_mask is not None:
            if not isinstance(pad_mask, Tensor) or pad_mask.dtype != torch.bool:
                raise TypeError("pad_mask must be a bool tensor (True at padded positions)")
            if pad_mask.shape != x.shape[:-1]:
                raise ValueError(f"pad_mask must have shape {tuple(x.shape[:-1])} (x.shape[:-1]), "
                                 f"got {tuple(pad_mask.shape)}")
        shape = x.shape
        rows = x.reshape(-1, self.num_features)
        groups = self.group_num
        if not self.training:
            # Inference: a fixed per-channel scale, so each token is normalized on its own.
            u = rows if groups is None else (rows.unflatten(-1, (groups, -1))
                                             * _token_rms_inverse(rows, groups, self.eps)).flatten(-2)
            z = u * (self.running_phi.to(x.dtype) + self.eps).rsqrt()
            out = z if self.weight is None else torch.addcmul(self.bias, z, self.weight)
            return out.reshape(shape)
        valid = None
        if pad_mask is not None:
            if bool(pad_mask.all()):
                raise ValueError("pad_mask marks every position as padding: no rows for the statistics")
            valid = (~pad_mask).reshape(-1, 1).to(x.dtype)
        with torch.no_grad():
            inv_rms = None if groups is None else _token_rms_inverse(rows.detach(), groups, self.eps)
            u = rows.detach() if inv_rms is None else (rows.detach().unflatten(-1, (groups, -1)) * inv_rms).flatten(-2)
            if valid is None:
                batch_sq = torch.linalg.vector_norm(u, dim=0).square() / u.shape[0]
            else:
                batch_sq = torch.linalg.vector_norm(u * valid, dim=0).square() / valid.sum()
            del u
            step = int(self.num_batches_tracked) + 1
            warm = step <= self.warmup_iters
            phi = self.running_phi.to(x.dtype)
            scale = (batch_sq if warm else phi).add(self.eps).sqrt()
        nu = self.running_nu
        if nu.dtype != x.dtype:  # the backward updates nu in place: keep it in the compute dtype
            self.running_nu = nu = nu.to(x.dtype)
        # Applied before the running statistics change, so that under vmap the Function's
        # clear error comes first (not an in-place error from the buffer update).
        out = _PowerNormFunction.apply(rows, inv_rms, valid, scale, self.weight, self.bias, nu, self.alpha_bkw)
        with torch.no_grad():
            # Warm-up keeps the plain average of the batch quadratic means (a good start
            # for the running mean); afterwards an exponential moving average. The
            # official code applies both during warm-up; we do not.
            if warm:
                new_phi = phi + (batch_sq - phi) / step
            else:
                new_phi = self.alpha_fwd * phi + (1 - self.alpha_fwd) * batch_sq
            self.running_phi.copy_(new_phi)
            self.num_batches_tracked.add_(1)
        return out.reshape(shape)
