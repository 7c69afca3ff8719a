"""The 1-D GP regression meta-learning benchmark of the neural-process literature.

Every task is a function drawn from a zero-mean GP with its own random hyperparameters,
observed at ``x ~ U[-2, 2]``, split into a context set and a target set (together at most
50 points). This is the benchmark of Le et al. (2018), Lee et al. (2020, BNP, arXiv
2010.09221) and Lee et al. (2023, MPNP, arXiv 2304.09431): models are trained on RBF tasks
and tested on RBF, Matérn-5/2, Periodic and RBF-with-Student-t-noise tasks.

Sampling is vectorised over tasks (one batched Cholesky factorisation in float64) and runs
on any device. Fixed test sets are drawn on the CPU from a seeded ``torch.Generator`` so they
are the same tensors on every machine, then moved to the requested device.

Conventions: within one batch every task has the same number of context and target points
(so batches are plain tensors); ``x`` is ``[B, N, 1]`` and ``y`` is ``[B, N, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from priors.tasks.gp import KERNELS as PFN_KERNELS
from priors.tasks.gp import kernel_matrix

__all__ = [
    "KERNELS",
    "TEST_SETS",
    "GPTaskSampler",
    "TaskBatch",
    "TaskSampler",
    "gp_kernel",
    "gp_test_set",
    "sample_gp",
    "student_t",
]

KERNELS = ("rbf", "matern52", "periodic")

# Hyperparameter ranges and noise levels of the benchmark, as in juho-lee/bnp
# (regression/data/gp.py), which the MPNP paper's 1-D GP experiments reuse.
LENGTHSCALE_RANGE = (0.1, 0.6)
SCALE_RANGE = (0.1, 1.0)
PERIOD_RANGE = (0.1, 0.5)
NOISE_STD = 0.02  # Gaussian observation noise (the "eps" of the GP sampler)
T_NOISE_MAX_SCALE = 0.15  # t-noise scale per point ~ U(0, 0.15)
T_NOISE_DF = 2.1  # degrees of freedom of the heavy-tailed noise
MAX_POINTS = 50
MIN_CONTEXT = 3
MIN_TARGET = 3
X_RANGE = 2.0  # x ~ U[-X_RANGE, X_RANGE]

#: The four fixed test sets: name -> (kernel, Student-t noise or not).
TEST_SETS: dict[str, tuple[str, bool]] = {
    "rbf": ("rbf", False),
    "matern": ("matern52", False),
    "periodic": ("periodic", False),
    "t_noise": ("rbf", True),
}
TEST_SEED = 43  # the test-set seed of the NPF configs (yuneg11/Neural-Process-Family)


@dataclass(frozen=True)
class TaskBatch:
    """A batch of regression tasks, each split into context and target points.

    Attributes:
        context_x: ``[B, Nc, x_dim]``.
        context_y: ``[B, Nc, y_dim]``.
        target_x: ``[B, Nt, x_dim]`` (points not in the context).
        target_y: ``[B, Nt, y_dim]``.
    """

    context_x: Tensor
    context_y: Tensor
    target_x: Tensor
    target_y: Tensor

    @property
    def x(self) -> Tensor:
        """All inputs, context first: ``[B, Nc + Nt, x_dim]``."""
        return torch.cat([self.context_x, self.target_x], dim=-2)

    @property
    def y(self) -> Tensor:
        """All outputs, context first: ``[B, Nc + Nt, y_dim]``."""
        return torch.cat([self.context_y, self.target_y], dim=-2)

    @property
    def batch_size(self) -> int:
        return self.context_x.shape[0]

    def to(self, *args, **kwargs) -> TaskBatch:
        """A copy with every tensor moved/cast as by ``Tensor.to``."""
        return TaskBatch(*(t.to(*args, **kwargs) for t in
                           (self.context_x, self.context_y, self.target_x, self.target_y)))


class TaskSampler(Protocol):
    """Anything that draws batches of tasks (what :func:`bayesnets.processes.fit` trains on)."""

    def sample(self, batch_size: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TaskBatch: ...


def gp_kernel(kernel: str, x1: Tensor, x2: Tensor, lengthscale: Tensor, scale: Tensor,
              period: Tensor | None = None) -> Tensor:
    """Stationary 1-D kernels of the benchmark, one hyperparameter set per task.

    Args:
        kernel: ``"rbf"``, ``"matern52"`` or ``"periodic"``.
        x1: ``[B, N, 1]``.
        x2: ``[B, M, 1]``.
        lengthscale: ``[B]``.
        scale: ``[B]`` (output standard deviation).
        period: ``[B]``, only for ``"periodic"``.

    Returns:
        ``[B, N, M]`` covariances:
        RBF ``s² exp(-d²/(2ℓ²))``; Matérn-5/2 ``s² (1 + √5 d/ℓ + 5d²/(3ℓ²)) exp(-√5 d/ℓ)``;
        Periodic ``s² exp(-2 sin²(π d / p) / ℓ²)``.
    """
    if kernel in PFN_KERNELS:  # the task priors' batched stationary kernels (priors.tasks.gp)
        return kernel_matrix(x1, x2, lengthscale[:, None], scale**2, kernel)
    if kernel == "periodic":
        if period is None:
            raise ValueError("the periodic kernel needs period, a tensor of shape [B]")
        d = (x1.unsqueeze(-2) - x2.unsqueeze(-3)).abs().sum(-1)  # [B, N, M]
        ell = lengthscale[:, None, None]
        return scale[:, None, None] ** 2 * torch.exp(-2.0 * (torch.sin(math.pi * d / period[:, None, None]) / ell) ** 2)
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def student_t(shape: tuple[int, ...], df: float, *, generator: torch.Generator | None = None,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """Student-t draws from uniforms only, so a ``torch.Generator`` makes them reproducible.

    Bailey's polar method (Math. Comp. 62, 1994): for ``(U, V)`` uniform on the unit disc with
    ``W = U² + V²``, ``T = U sqrt(df (W^(-2/df) - 1) / W)`` is Student-t with ``df`` degrees of
    freedom. Rejected pairs (outside the disc, probability ``1 - π/4``) are redrawn.

    Returns:
        ``shape`` draws on ``device`` (the generator's device when it is given).
    """
    if generator is not None:
        device = generator.device
    n = math.prod(shape)
    out = torch.empty(n, device=device, dtype=dtype)
    todo = torch.arange(n, device=device)
    while todo.numel() > 0:
        uv = 2.0 * torch.rand(todo.numel(), 2, generator=generator, device=device, dtype=dtype) - 1.0
        w = (uv**2).sum(-1)
        ok = (w < 1.0) & (w > 0.0)
        u, w = uv[ok, 0], w[ok]
        out[todo[ok]] = u * torch.sqrt(df * (w ** (-2.0 / df) - 1.0) / w)
        todo = todo[~ok]
    return out.reshape(shape)


def sample_gp(kernel: str, x: Tensor, lengthscale: Tensor, scale: Tensor, period: Tensor | None = None, *,
              noise_std: float = NOISE_STD, generator: torch.Generator | None = None) -> Tensor:
    """Noisy function values ``y ~ N(0, K(x, x) + noise_std² I)``, one GP per task.

    Args:
        kernel: as in :func:`gp_kernel`.
        x: ``[B, N, 1]``.
        lengthscale, scale, period: ``[B]`` hyperparameters (see :func:`gp_kernel`).
        noise_std: Gaussian observation noise.
        generator: random source (on ``x``'s device).

    Returns:
        ``[B, N, 1]`` in ``x``'s dtype (factorised in float64 for stability).
    """
    xd = x.double()
    cov = gp_kernel(kernel, xd, xd, lengthscale.double(), scale.double(),
                    None if period is None else period.double())
    cov = cov + noise_std**2 * torch.eye(x.shape[-2], dtype=cov.dtype, device=cov.device)
    eps = torch.randn(*x.shape[:-1], 1, generator=generator, device=x.device, dtype=torch.float64)
    return (torch.linalg.cholesky(cov) @ eps).to(x.dtype)


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator | None, device) -> Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=generator, device=device, dtype=torch.float64)


def _randint(low: int, high: int, generator: torch.Generator | None, device) -> int:
    """An integer in ``{low, ..., high}`` (inclusive) from ``generator``."""
    return int(torch.randint(low, high + 1, (), generator=generator, device=device).item())


class GPTaskSampler:
    """Draws batches of 1-D GP regression tasks with random hyperparameters.

    Per task: ``ℓ ~ U(0.1, 0.6)``, ``s ~ U(0.1, 1.0)`` (and period ``p ~ U(0.1, 0.5)`` for the
    periodic kernel), inputs ``x ~ U[-2, 2]``, ``y ~ N(0, K + 0.02² I)``; with
    ``t_noise=True`` each ``y`` also gets ``0.15 u t`` with ``u ~ U(0, 1)`` and ``t`` Student-t
    with 2.1 degrees of freedom (the benchmark's "t-noise" set). Per batch: the number of
    context points is uniform on ``{min_context, ..., max_points - min_target}`` and the
    number of targets uniform on ``{min_target, ..., max_points - num_context}``.

    Args:
        kernel: ``"rbf"``, ``"matern52"`` or ``"periodic"``.
        t_noise: add the heavy-tailed Student-t noise.
        max_points: context plus target points per task, at most.
        min_context: fewest context points (0 trains models to give the prior predictive).
        min_target: fewest target points.
    """

    def __init__(self, kernel: str = "rbf", t_noise: bool = False, max_points: int = MAX_POINTS,
                 min_context: int = MIN_CONTEXT, min_target: int = MIN_TARGET) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if min_context < 0 or min_target < 1 or min_context + min_target > max_points:
            raise ValueError(
                "need min_context >= 0, min_target >= 1 and min_context + min_target <= max_points, got "
                f"min_context={min_context}, min_target={min_target}, max_points={max_points}"
            )
        self.kernel = kernel
        self.t_noise = bool(t_noise)
        self.max_points = int(max_points)
        self.min_context = int(min_context)
        self.min_target = int(min_target)

    def __repr__(self) -> str:
        return (f"GPTaskSampler(kernel={self.kernel!r}, t_noise={self.t_noise}, max_points={self.max_points}, "
                f"min_context={self.min_context}, min_target={self.min_target})")

    def sample(self, batch_size: int, *, num_context: int | None = None, num_target: int | None = None,
               generator: torch.Generator | None = None, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> TaskBatch:
        """Draw ``batch_size`` tasks.

        Args:
            batch_size: number of tasks ``B``.
            num_context: fix the number of context points (default: random, see the class).
            num_target: fix the number of target points (default: random).
            generator: random source; the draws happen on its device (default: torch's global
                generator on ``device``).
            device: where the returned tensors live (default: the generator's device, else CPU).
            dtype: floating dtype of the returned tensors (default: torch's default dtype).

        Returns:
            A :class:`TaskBatch` with ``x`` and ``y`` of shape ``[B, N, 1]``.
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        at = generator.device if generator is not None else torch.device(device or "cpu")
        nc = _randint(self.min_context, self.max_points - self.min_target, generator, at) \
            if num_context is None else int(num_context)
        nt = _randint(self.min_target, self.max_points - nc, generator, at) if num_target is None else int(num_target)
        if nc < 0 or nt < 1:
            raise ValueError(f"need num_context >= 0 and num_target >= 1, got {nc} and {nt}")
        b, n = int(batch_size), nc + nt
        x = X_RANGE * (2.0 * torch.rand(b, n, 1, generator=generator, device=at, dtype=torch.float64) - 1.0)
        ell = _uniform(b, LENGTHSCALE_RANGE, generator, at)
        scale = _uniform(b, SCALE_RANGE, generator, at)
        period = _uniform(b, PERIOD_RANGE, generator, at) if self.kernel == "periodic" else None
        y = sample_gp(self.kernel, x, ell, scale, period, generator=generator)
        if self.t_noise:
            u = T_NOISE_MAX_SCALE * torch.rand(b, n, 1, generator=generator, device=at, dtype=torch.float64)
            y = y + u * student_t((b, n, 1), T_NOISE_DF, generator=generator, device=at)
        out = dict(device=device if device is not None else at, dtype=dtype or torch.get_default_dtype())
        x, y = x.to(**out), y.to(**out)
        return TaskBatch(x[:, :nc], y[:, :nc], x[:, nc:], y[:, nc:])


def gp_test_set(name: str, num_tasks: int = 1024, batch_size: int = 16, seed: int = TEST_SEED,
                device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> list[TaskBatch]:
    """A fixed test set of the benchmark: the same tensors on every machine for one seed.

    Args:
        name: ``"rbf"``, ``"matern"``, ``"periodic"`` or ``"t_noise"`` (RBF tasks with Student-t noise).
        num_tasks: total number of tasks (a multiple of ``batch_size``).
        batch_size: tasks per batch. Each batch has its own context/target sizes, so small batches
            cover more of the split sizes (the score depends strongly on the context size).
        seed: seed of the CPU generator the set is drawn from.
        device: where the tensors go.
        dtype: floating dtype (default: torch's default dtype).

    Returns:
        ``num_tasks // batch_size`` task batches.
    """
    if name not in TEST_SETS:
        raise ValueError(f"name must be one of {tuple(TEST_SETS)}, got {name!r}")
    if num_tasks < batch_size or num_tasks % batch_size:
        raise ValueError(f"num_tasks must be a positive multiple of batch_size={batch_size}, got {num_tasks}")
    kernel, t_noise = TEST_SETS[name]
    sampler = GPTaskSampler(kernel, t_noise=t_noise)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return [sampler.sample(batch_size, generator=gen, device=device, dtype=dtype)
            for _ in range(num_tasks // batch_size)]
