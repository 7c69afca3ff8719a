"""Random draws driven by an explicit ``torch.Generator``.

Task priors draw everything from a generator handed in by the caller so that a PFN
training run can checkpoint the generator's state and resume bit-exactly. Torch's own
Gamma sampler (``torch._standard_gamma``) takes no generator, so the Gamma draws for
hyperpriors are done here with Marsaglia & Tsang's squeeze method (ACM TOMS 26(3), 2000),
vectorised with a fixed number of proposals per draw.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gamma", "normal", "randint", "uniform"]

# Marsaglia-Tsang accepts a proposal with probability > 0.95 for every shape >= 1, so the
# chance that all of 24 proposals are rejected is < 0.05**24 ~ 6e-32: never in practice.
_GAMMA_PROPOSALS = 24


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``U[0, 1)`` draws of ``shape`` on ``like``'s device and dtype."""
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def normal(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal draws of ``shape`` on ``like``'s device and dtype."""
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def randint(low: int, high: int, shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Integers uniform on ``[low, high)`` of ``shape`` on ``like``'s device (int64)."""
    return torch.randint(low, high, shape, generator=generator, device=like.device)


def gamma(concentration: float, rate: float, shape: tuple[int, ...], generator: torch.Generator | None,
          like: Tensor) -> Tensor:
    """``Gamma(concentration, rate)`` draws (mean ``concentration / rate``) of ``shape``.

    Shapes below one use the boost ``G(a) = G(a + 1) * U^(1/a)`` (Marsaglia & Tsang, §6),
    computed in log space so tiny shapes (the PFN paper's noise prior ``Gamma(1e-4, 1)``)
    underflow to 0 rather than to NaN.
    """
    if not (concentration > 0 and rate > 0):
        raise ValueError(f"Gamma needs concentration > 0 and rate > 0, got ({concentration}, {rate})")
    a = concentration + 1.0 if concentration < 1.0 else concentration
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = normal((_GAMMA_PROPOSALS, *shape), generator, like)
    u = uniform((_GAMMA_PROPOSALS, *shape), generator, like)
    v = (1.0 + c * z) ** 3
    ok = (v > 0) & (torch.log(u) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-30)))
    first = torch.argmax(ok.to(torch.uint8), dim=0, keepdim=True)  # first accepted proposal
    draw = torch.gather(d * v, 0, first).squeeze(0)
    if concentration < 1.0:
        log_u = torch.log(uniform(shape, generator, like).clamp_min(torch.finfo(like.dtype).tiny))
        draw = torch.exp(torch.log(draw) + log_u / concentration)
    return draw / rate
