"""Binary neural network layers with periodic binarization (BiPer).

Vargas, Jacome, Correa and Arguello, "BiPer: Binary Neural Networks using a Periodic
Function", CVPR 2024, arXiv:2404.01278.

Weights are binarized through a square wave of the latent weights instead of their sign:

* **stage 1**: the weights used are the continuous ``sin(freq * w)`` (a smooth stand-in for
  the square wave), activations are binary;
* **stage 2**: the weights are ``sign(sin(freq * w))`` in ``{-1, +1}``; the sign is passed
  straight through in the backward pass, so ``d b / d w = freq * cos(freq * w)`` (the
  derivative of the sine surrogate).

Activations are binarized with ``sign`` forward and the piecewise-quadratic ApproxSign
surrogate ``max(0, 2 - 2|a|)`` backward, after dividing each sample by its standard deviation
in training (which only moves the surrogate's window: the sign is scale-free). A learned
per-output-channel scale ``alpha`` multiplies the output. Train in stage 1, then switch
every layer to stage 2 (``set_stage`` / ``TwoStageSchedule``) and fine-tune.

Binarization maps 0 to +1 (the official code's ``torch.sign`` maps it to 0), so binary
weights and activations are always in ``{-1, +1}``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "BiPerConv2d",
    "BiPerLinear",
    "TwoStageSchedule",
    "binarize",
    "quantization_error",
    "set_stage",
]

#: The frequency of the square wave in the official CIFAR-10 configuration (edmav4/BiPer).
DEFAULT_FREQ = 20.0
#: Added to the activation variance before normalizing (official code).
ACTIVATION_EPS = 1e-5


def binarize(x: Tensor) -> Tensor:
    """``+1`` where ``x >= 0``, ``-1`` elsewhere; same shape and dtype as ``x`` (no gradient)."""
    return (x >= 0).to(x.dtype) * 2 - 1


class _SignSTE(torch.autograd.Function):
    """Binary forward, identity backward (straight-through estimator)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return binarize(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


class _ApproxSign(torch.autograd.Function):
    """Binary forward; backward ``grad * max(0, 2 - 2|a|)`` (Bi-Real Net's ApproxSign surrogate).

    With ``dims``, ``a = x / sqrt(var(x, dims) + eps)`` (unbiased variance, as the official
    code) and the gradient also flows through that normalization; ``a`` is never stored
    (``sign(a) = sign(x)``), only ``x`` and the per-sample factor.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, dims: tuple[int, ...] | None) -> tuple[Tensor, Tensor]:
        if dims is None:
            inv_std = torch.ones((), dtype=x.dtype, device=x.device)
        else:
            inv_std = (x.var(dims, keepdim=True) + ACTIVATION_EPS).rsqrt()
        return binarize(x), inv_std

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        ctx.save_for_backward(inputs[0], output[1])
        ctx.dims = inputs[1]
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _: Tensor) -> tuple[Tensor, None]:
        x, inv_std = ctx.saved_tensors
        # ApproxSign's derivative at a = x * inv_std, built in one buffer.
        a = (x * inv_std).abs_().mul_(-2.0).add_(2.0).clamp_min_(0.0)
        grad_a = a * grad
        del a
        if ctx.dims is None:
            return grad_a, None
        dims = ctx.dims
        n = math.prod(x.shape[d] for d in dims)
        # d a_i / d x_j = s delta_ij - s^3 x_i (x_j - mean) / (n - 1), s = 1 / sqrt(var + eps).
        moment = (grad_a * x).sum(dims, keepdim=True)
        centred = x - x.mean(dims, keepdim=True)
        grad_x = grad_a.mul_(inv_std)
        return grad_x.sub_(centred * (inv_std.pow(3) * moment / (n - 1))), None


def _check_stage(stage: int) -> int:
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 (sine weights) or 2 (binary weights), got {stage!r}")
    return int(stage)


class _BiPerMixin:
    """Shared weight/activation binarization of the BiPer layers."""

    weight: Tensor
    alpha: Tensor
    freq: float
    binary_activations: bool
    training: bool
    _stage: int

    def _setup(self, out_channels: int, fan_in: int, freq: float, stage: int, binary_activations: bool) -> None:
        if not float(freq) > 0:
            raise ValueError(f"freq must be positive, got {freq}")
        self.freq = float(freq)
        self._stage = _check_stage(stage)
        self.binary_activations = bool(binary_activations)
        # Per-output-channel scale. The official code starts it at U(0, 1); 1/sqrt(fan_in)
        # instead keeps the output of +-1 inputs and +-1 weights at unit scale.
        self.alpha = nn.Parameter(torch.full((out_channels,), 1.0 / math.sqrt(fan_in)))  # type: ignore[misc]

    @property
    def stage(self) -> int:
        """1: sine weights ``sin(freq w)``; 2: binary weights ``sign(sin(freq w))``."""
        return self._stage

    @stage.setter
    def stage(self, value: int) -> None:
        self._stage = _check_stage(value)

    def binary_weight(self) -> Tensor:
        """The weights the layer uses: ``sin(freq w)`` (stage 1) or ``+-1`` (stage 2), shaped as ``weight``."""
        wave = torch.sin(self.freq * self.weight)
        return wave if self._stage == 1 else _SignSTE.apply(wave)

    def _binary_input(self, x: Tensor, dims: tuple[int, ...]) -> Tensor:
        if not self.binary_activations:
            return x
        # In training each sample is divided by its standard deviation first: the sign is
        # unchanged, but the surrogate's [-1, 1] window sits at a fixed fraction of each
        # sample's spread (a single value has no spread: nothing to divide by).
        scaled = self.training and math.prod(x.shape[d] for d in dims) > 1
        return _ApproxSign.apply(x, dims if scaled else None)[0]

    def _scaled_weight(self) -> tuple[Tensor, Tensor | None]:
        """``alpha``-scaled binary weights and bias: ``alpha * (W x + b) = (alpha W) x + alpha b``.

        Folding the per-channel scale into the (small) weights saves one output-sized buffer.
        """
        alpha = self.alpha.view(-1, *([1] * (self.weight.dim() - 1)))
        bias: Tensor | None = self.bias  # type: ignore[attr-defined]
        return self.binary_weight() * alpha, None if bias is None else bias * self.alpha


class BiPerLinear(_BiPerMixin, nn.Linear):
    """A binary fully connected layer with periodic weight binarization (arXiv:2404.01278).

    ``y = alpha * (b(x) @ B(w).T + bias)`` with ``B(w)`` the stage's weights and ``b`` the
    activation binarizer (identity when ``binary_activations=False``).

    Args:
        in_features: input size.
        out_features: output size.
        bias: learn an additive bias.
        freq: frequency ``omega`` of the square wave.
        stage: 1 (sine weights) or 2 (binary weights); switch with :func:`set_stage`.
        binary_activations: binarize the inputs too (False: full-precision inputs).

    Shapes:
        ``x``: ``[..., in_features]`` -> ``[..., out_features]``; in training each row is
        divided by its standard deviation over the last dimension before binarization.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, freq: float = DEFAULT_FREQ,
                 stage: int = 1, binary_activations: bool = True) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._setup(out_features, in_features, freq, stage, binary_activations)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, freq={self.freq}, stage={self._stage}, "
                f"binary_activations={self.binary_activations}")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape [..., {self.in_features}], got {tuple(x.shape)}")
        return F.linear(self._binary_input(x, (-1,)), *self._scaled_weight())


class BiPerConv2d(_BiPerMixin, nn.Conv2d):
    """A binary 2-D convolution with periodic weight binarization (arXiv:2404.01278).

    Takes ``nn.Conv2d``'s arguments plus ``freq``, ``stage`` and ``binary_activations`` (see
    :class:`BiPerLinear`). Activations are binarized before zero padding, as in the official
    code, and in training each sample is divided by its standard deviation over
    ``[C, H, W]`` first.

    Shapes:
        ``x``: ``[N, C_in, H, W]`` -> ``[N, C_out, H', W']``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | str = 0, dilation: int = 1, groups: int = 1, bias: bool = False,
                 freq: float = DEFAULT_FREQ, stage: int = 1, binary_activations: bool = True) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                           dilation=dilation, groups=groups, bias=bias)
        fan_in = (in_channels // groups) * math.prod(self.kernel_size)
        self._setup(out_channels, fan_in, freq, stage, binary_activations)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, freq={self.freq}, stage={self._stage}, "
                f"binary_activations={self.binary_activations}")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        return self._conv_forward(self._binary_input(x, (1, 2, 3)), *self._scaled_weight())


def set_stage(module: nn.Module, stage: int) -> int:
    """Put every BiPer layer inside ``module`` in ``stage`` (1 or 2); returns how many were set."""
    stage = _check_stage(stage)
    count = 0
    for m in module.modules():
        if isinstance(m, _BiPerMixin):
            m.stage = stage
            count += 1
    return count


class TwoStageSchedule:
    """BiPer's two-stage training: sine weights for ``stage1_steps`` steps, binary weights after.

    Call :meth:`step` once per optimisation step (like a learning-rate scheduler).

    Args:
        module: the network holding BiPer layers (all start in stage 1).
        stage1_steps: steps of stage 1 before switching every layer to stage 2.
    """

    def __init__(self, module: nn.Module, stage1_steps: int) -> None:
        if int(stage1_steps) < 0:
            raise ValueError(f"stage1_steps must be >= 0, got {stage1_steps}")
        self.module = module
        self.stage1_steps = int(stage1_steps)
        self.num_steps = 0
        if set_stage(module, 1 if self.stage1_steps > 0 else 2) == 0:
            raise ValueError("module holds no BiPer layers (BiPerLinear / BiPerConv2d)")

    @property
    def stage(self) -> int:
        return 1 if self.num_steps < self.stage1_steps else 2

    def step(self) -> int:
        """Count one step; switch to stage 2 when stage 1 is over. Returns the current stage."""
        self.num_steps += 1
        if self.num_steps == self.stage1_steps:
            set_stage(self.module, 2)
        return self.stage


def quantization_error(weight: Tensor, freq: float = DEFAULT_FREQ, per_channel: bool = False) -> Tensor:
    """Mean squared error between the sine weights and their best scaled binarization.

    ``QE = mean((sin(freq w) - a * sign(sin(freq w)))^2)`` with the optimal scale
    ``a = mean |sin(freq w)|``, which equals ``mean(sin^2) - a^2``. For ``w ~ N(0, 1)`` and
    growing ``freq``, ``a -> 2/pi`` and ``QE -> 1/2 - 4/pi^2 ~ 0.0947``.

    Args:
        weight: latent weights ``[out, ...]``.
        freq: frequency ``omega`` of the square wave.
        per_channel: one scale per output channel (first dimension) instead of one in all.

    Returns:
        A scalar tensor.
    """
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.numel() == 0:
        raise TypeError("weight must be a non-empty floating-point tensor")
    if not float(freq) > 0:
        raise ValueError(f"freq must be positive, got {freq}")
    wave = torch.sin(float(freq) * weight)
    if per_channel:
        if weight.dim() < 2:
            raise ValueError(f"per_channel needs weight of shape [out, ...] with >= 2 dims, got {tuple(weight.shape)}")
        wave = wave.flatten(1)
        scale = wave.abs().mean(1, keepdim=True)
    else:
        scale = wave.abs().mean()
    return (wave - scale * binarize(wave)).pow(2).mean()
