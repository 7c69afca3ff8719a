"""Synthetic sequences with probabilistic structure for PV-RNN (Ahmadi & Tani 2019, arXiv 1811.01339).

A probabilistic finite-state machine whose states are 2-D movement primitives: each state
draws one closed loop that starts and ends at the origin, and when a loop ends the next
primitive is chosen from the transition matrix. The trajectory is smooth within a primitive
and unpredictable only at the branching points, the structure the paper's datasets have
(a probabilistic finite-state machine, and probabilistic transitions between primitives).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DEFAULT_TRANSITIONS", "PRIMITIVES", "PFSMTrajectories"]


def _circle_up(s: Tensor) -> Tensor:
    return torch.stack([torch.sin(2 * math.pi * s), 1 - torch.cos(2 * math.pi * s)], -1)


def _circle_down(s: Tensor) -> Tensor:
    return torch.stack([torch.sin(2 * math.pi * s), torch.cos(2 * math.pi * s) - 1], -1)


def _figure_eight(s: Tensor) -> Tensor:
    return torch.stack([-torch.sin(2 * math.pi * s), 0.5 * torch.sin(4 * math.pi * s)], -1)


#: Primitive name -> closed curve ``phase [...] in [0, 1] -> point [..., 2]``, each through the origin
#: at phase 0 and 1, so that any primitive may follow any other without a jump.
PRIMITIVES: dict[str, Callable[[Tensor], Tensor]] = {
    "circle_up": _circle_up,
    "circle_down": _circle_down,
    "figure_eight": _figure_eight,
}

#: Default transition probabilities between (circle_up, circle_down, figure_eight); rows sum to 1.
#: Each row has a likely, an unlikely and a rare successor, so the branching is neither
#: deterministic nor uniform.
DEFAULT_TRANSITIONS = ((0.1, 0.6, 0.3),
                       (0.3, 0.1, 0.6),
                       (0.6, 0.3, 0.1))


@dataclass
class PFSMTrajectories:
    """A probabilistic finite-state machine emitting 2-D trajectories.

    Args:
        primitives: names from :data:`PRIMITIVES`, one per state.
        transitions: ``[S, S]`` row-stochastic matrix, ``transitions[i][j] = P(next = j | current = i)``.
        period: steps per primitive.
        amplitude: scale of the curves (0.4 keeps every point inside ``[-0.8, 0.8]``).
        noise: standard deviation of Gaussian noise added to every point.

    Example:
        >>> data = PFSMTrajectories()
        >>> x, states = data.sample(16, 100, generator=torch.Generator().manual_seed(0))  # [16, 100, 2], [16, 100]
    """

    primitives: Sequence[str] = ("circle_up", "circle_down", "figure_eight")
    transitions: Sequence[Sequence[float]] = DEFAULT_TRANSITIONS
    period: int = 20
    amplitude: float = 0.4
    noise: float = 0.0

    def __post_init__(self) -> None:
        unknown = [p for p in self.primitives if p not in PRIMITIVES]
        if unknown or not self.primitives:
            raise ValueError(f"primitives must be a non-empty list from {sorted(PRIMITIVES)}, got unknown {unknown}")
        p = torch.as_tensor(self.transitions, dtype=torch.float64)
        s = len(self.primitives)
        if p.shape != (s, s):
            raise ValueError(f"transitions must have shape [{s}, {s}] (one row per primitive), got {tuple(p.shape)}")
        if bool((p < 0).any()) or not torch.allclose(p.sum(1), torch.ones(s, dtype=p.dtype)):
            raise ValueError(
                f"transitions must be non-negative with rows summing to 1, got row sums {p.sum(1).tolist()}")
        if not isinstance(self.period, int) or self.period < 2:
            raise ValueError(f"period must be an int >= 2, got {self.period!r}")
        if not self.noise >= 0 or not self.amplitude > 0:
            raise ValueError(f"need amplitude > 0 and noise >= 0, got {self.amplitude!r} and {self.noise!r}")

    def transition_matrix(self) -> Tensor:
        """``[S, S]`` float64."""
        return torch.as_tensor(self.transitions, dtype=torch.float64)

    def sample(self, num_sequences: int, num_steps: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Draw sequences; each starts at the origin with a uniformly chosen primitive.

        Args:
            num_sequences: ``N``.
            num_steps: ``T``.
            generator: CPU random generator (reproducibility); the global one if None.
            dtype: floating dtype of the trajectories (move them with ``.to(device)``).

        Returns:
            ``(x, states)``: trajectories ``[N, T, 2]`` and the primitive index of every step ``[N, T]``.
        """
        for name, v in (("num_sequences", num_sequences), ("num_steps", num_steps)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        p = self.transition_matrix()
        num_segments = -(-num_steps // self.period)
        state = torch.randint(len(self.primitives), (num_sequences,), generator=generator)
        segments = [state]
        for _ in range(num_segments - 1):
            state = torch.multinomial(p[state], 1, generator=generator).squeeze(1)
            segments.append(state)
        states = torch.stack(segments, 1).repeat_interleave(self.period, 1)[:, :num_steps]  # [N, T]
        # Phase k/period for k = 1..period: the step after the origin to the return to it.
        phase = (torch.arange(num_steps, dtype=torch.float64) % self.period + 1) / self.period
        curves = torch.stack([PRIMITIVES[name](phase) for name in self.primitives])  # [S, T, 2]
        x = self.amplitude * curves[states, torch.arange(num_steps)]  # [N, T, 2]
        if self.noise > 0:
            x = x + self.noise * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x.to(dtype), states
