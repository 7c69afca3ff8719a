"""Leaky integrate-and-fire (LIF) neurons with surrogate gradients, and a spiking MLP.

Meng, Xiao, Yan, Wang, Lin and Luo, "Towards Memory- and Time-Efficient Backpropagation
for Training Spiking Neural Networks" (SLTT), ICCV 2023, arXiv:2302.14311 (P43).

LIF dynamics per time step (soft reset, no input decay, as the official ``SLTTNeuron``)::

    v[t] = (1 - 1/tau) v[t-1] + I[t]           (v[t-1] after reset; v[-1] = 0)
    s[t] = H(v[t] - v_th)                       (spike; surrogate gradient backward)
    v[t] <- v[t] - v_th s[t]                    (soft reset)

The Heaviside step has no useful gradient; backward uses the derivative of a smooth
surrogate ``sigma`` (:data:`SURROGATES`). It is written as
``H(x) + sigma(x) - stop_grad(sigma(x))``, which is exactly ``H(x)`` forward and
``sigma'(x)`` backward, with plain torch ops only, so the neuron works under
``torch.func.functional_call`` and ``vmap`` (as inside :class:`~bayesnets.bnn.BayesianNet`).

SLTT drops the temporal paths of backpropagation: ``temporal_grad=False`` detaches
``v[t-1]`` (:class:`SLTTLIF`), so gradients flow only through each step's spatial
computation. Together with per-step losses this makes training memory independent of the
number of time steps; the training step itself is :func:`inference.training.sltt.sltt_step`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["LIF", "SLTTLIF", "SURROGATES", "SpikingMLP", "spike"]


def _sigmoid(x: Tensor, alpha: float) -> Tensor:
    return torch.sigmoid(alpha * x)


def _rectangle(x: Tensor, alpha: float) -> Tensor:
    # Primitive of the box 1/alpha on |x| < alpha/2 (official ``Rectangle`` with width alpha).
    return torch.clamp(x / alpha + 0.5, 0.0, 1.0)


def _triangle(x: Tensor, alpha: float) -> Tensor:
    # Primitive of the triangle alpha - alpha^2 |x| on |x| < 1/alpha (spikingjelly's
    # PiecewiseQuadratic, the official default "triangle").
    xc = torch.clamp(x, -1.0 / alpha, 1.0 / alpha)
    return -0.5 * alpha**2 * xc.abs() * xc + alpha * xc + 0.5


#: Surrogate primitives ``sigma(x, alpha)`` (their derivative is the surrogate gradient) and
#: the official defaults for ``alpha``: sigmoid 4 (spikingjelly), rectangle width 1, triangle 1.
SURROGATES: dict[str, tuple[Callable[[Tensor, float], Tensor], float]] = {
    "sigmoid": (_sigmoid, 4.0),
    "rectangle": (_rectangle, 1.0),
    "triangle": (_triangle, 1.0),
}


def spike(x: Tensor, surrogate: str = "sigmoid", alpha: float | None = None) -> Tensor:
    """Heaviside ``H(x) = [x >= 0]`` forward, surrogate gradient backward.

    Args:
        x: membrane potential minus threshold, any shape.
        surrogate: ``"sigmoid"``, ``"rectangle"`` or ``"triangle"``.
        alpha: surrogate sharpness (default: :data:`SURROGATES`'s).
    """
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {sorted(SURROGATES)}, got {surrogate!r}")
    fn, default = SURROGATES[surrogate]
    soft = fn(x, default if alpha is None else float(alpha))
    return (x >= 0).to(x.dtype) + (soft - soft.detach())


class LIF(nn.Module):
    """A layer of leaky integrate-and-fire neurons (no parameters, no hidden state).

    The state is passed explicitly, ``(spikes, v) = lif(current, v_prev)``, so one module
    serves step-by-step training (SLTT) and whole-sequence forward passes, and stays
    functional (vmap-able) inside a :class:`~bayesnets.bnn.BayesianNet`.

    Args:
        tau: membrane time constant (``> 1``; decay ``1 - 1/tau`` per step).
        v_th: firing threshold.
        surrogate, alpha: surrogate gradient (see :func:`spike`).
        temporal_grad: backpropagate through ``v[t-1]`` (BPTT); ``False`` is SLTT.
        detach_reset: no gradient through the reset term.
    """

    def __init__(self, tau: float = 2.0, v_th: float = 1.0, surrogate: str = "sigmoid", alpha: float | None = None,
                 temporal_grad: bool = True, detach_reset: bool = False) -> None:
        super().__init__()
        if not float(tau) > 1:
            raise ValueError(f"tau must be > 1 (the decay is 1 - 1/tau), got {tau}")
        if not float(v_th) > 0:
            raise ValueError(f"v_th must be positive, got {v_th}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {sorted(SURROGATES)}, got {surrogate!r}")
        self.tau, self.v_th, self.surrogate, self.alpha = float(tau), float(v_th), surrogate, alpha
        self.temporal_grad, self.detach_reset = bool(temporal_grad), bool(detach_reset)

    def forward(self, current: Tensor, v: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step: input current ``[..., C]`` and previous potential -> ``(spikes, v)``."""
        if v is None:
            v = current
        else:
            if v.shape != current.shape:
                raise ValueError(f"v must have the shape of current {tuple(current.shape)}, got {tuple(v.shape)}")
            if not self.temporal_grad:
                v = v.detach()  # SLTT: no temporal path
            v = (1 - 1 / self.tau) * v + current
        s = spike(v - self.v_th, self.surrogate, self.alpha)
        v = v - self.v_th * (s.detach() if self.detach_reset else s)
        return s, v

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, v_th={self.v_th}, surrogate={self.surrogate!r}, "
                f"temporal_grad={self.temporal_grad}")


class SLTTLIF(LIF):
    """LIF neurons for SLTT: the temporal path ``v[t-1]`` is detached (arXiv:2302.14311)."""

    def __init__(self, tau: float = 2.0, v_th: float = 1.0, surrogate: str = "sigmoid",
                 alpha: float | None = None, detach_reset: bool = False) -> None:
        super().__init__(tau, v_th, surrogate, alpha, temporal_grad=False, detach_reset=detach_reset)


class SpikingMLP(nn.Module):
    """A spiking MLP: ``Linear -> LIF`` blocks and a linear readout at every time step.

    The readout is non-spiking (logits per step); :meth:`forward` averages it over the time
    steps. Inputs are either static (``[N, in_features]``, fed at every step: direct
    encoding) or sequences ``[N, T, in_features]``.

    Args:
        in_features, out_features: input and output sizes.
        hidden: widths of the spiking layers.
        num_steps: time steps for static inputs.
        tau, v_th, surrogate, alpha, temporal_grad: the neurons' settings (:class:`LIF`).

    Shapes:
        ``forward``: ``[N, in]`` or ``[N, T, in]`` -> ``[N, out]``;
        ``step``: ``[N, in]`` and the state -> ``[N, out]`` and the new state.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, num_steps: int = 4,
                 tau: float = 2.0, v_th: float = 1.0, surrogate: str = "sigmoid", alpha: float | None = None,
                 temporal_grad: bool = True) -> None:
        super().__init__()
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not hidden:
            raise ValueError("hidden must list at least one spiking layer width")
        sizes = [int(in_features), *(int(h) for h in hidden)]
        self.in_features, self.num_steps = int(in_features), int(num_steps)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.neuron = LIF(tau, v_th, surrogate, alpha, temporal_grad)
        self.readout = nn.Linear(sizes[-1], int(out_features))

    def step(self, x: Tensor, state: Sequence[Tensor | None] | None = None) -> tuple[Tensor, list[Tensor]]:
        """One time step: input ``[N, in]`` and the membrane potentials (None at t = 0)."""
        state = [None] * len(self.layers) if state is None else list(state)
        if len(state) != len(self.layers):
            raise ValueError(f"state must hold {len(self.layers)} potentials (one per spiking layer), got {len(state)}")
        h, new_state = x, []
        for layer, v in zip(self.layers, state):
            h, v = self.neuron(layer(h), v)
            new_state.append(v)
        return self.readout(h), new_state

    def sequence(self, x: Tensor) -> Tensor:
        """``[N, in]`` (repeated ``num_steps`` times) or ``[N, T, in]`` -> ``[T, N, in]``."""
        if x.dim() == 2 and x.shape[-1] == self.in_features:
            return x.unsqueeze(0).expand(self.num_steps, *x.shape)
        if x.dim() == 3 and x.shape[-1] == self.in_features:
            return x.transpose(0, 1)
        raise ValueError(
            f"x must have shape [N, {self.in_features}] or [N, T, {self.in_features}], got {tuple(x.shape)}"
        )

    def forward(self, x: Tensor) -> Tensor:
        state: list[Tensor] | None = None
        total = None
        for x_t in self.sequence(x):
            out, state = self.step(x_t, state)
            total = out if total is None else total + out
        return total / self.num_steps if x.dim() == 2 else total / x.shape[1]  # type: ignore[operator]
