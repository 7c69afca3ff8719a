"""HMC and NUTS through Pyro's MCMC, returning a :class:`~inference.posterior.Posterior`.

Models with a fast functional form (``log_density``, e.g. :class:`bayesnets.bnn.BayesianNet`)
are sampled through a ``potential_fn`` built from it, which skips Pyro's per-step
tracing; any other Pyro model ``model(x, y)`` is sampled through its trace. Chains run
one after another in this process (Pyro's multi-process chains hang or fail on several
platforms and cannot share a GPU), each with its own seed and its own warm-up:
step-size dual averaging towards ``target_accept`` and a (diagonal or dense) mass matrix
from Stan's windowed adaptation.

Per-draw statistics (ArviZ names): ``diverging``, ``acceptance_rate``, ``step_size``,
``n_steps`` (leapfrog steps), ``tree_depth`` (NUTS) and ``lp`` (log joint density in
unconstrained space, i.e. minus the potential energy).
"""

from __future__ import annotations

import math
import time
import warnings
from abc import abstractmethod
from typing import Any

import pyro
import pyro.infer
import torch
from torch import Tensor

from inference.diagnostics import divergence_message
from inference.engine import Engine, base_seed, has_fast_density, prepare_data, seeded
from inference.posterior import Posterior

__all__ = ["HMC", "NUTS"]


class _CountingNUTS(pyro.infer.NUTS):
    """Pyro's NUTS, counting leapfrog steps (one per base tree) for the sample stats."""

    n_leapfrog = 0

    def _build_basetree(self, *args: Any, **kwargs: Any) -> Any:
        self.n_leapfrog += 1
        return super()._build_basetree(*args, **kwargs)


class _StatsHook:
    """MCMC ``hook_fn`` recording per-draw statistics after warm-up.

    Pyro keeps only running summaries, so the per-draw acceptance probability is
    recovered exactly from the running mean it updates each draw:
    ``a_n = n * m_n - (n - 1) * m_{n-1}``.
    """

    def __init__(self, num_warmup: int) -> None:
        self.num_warmup = num_warmup
        self.rows: dict[str, list[float]] = {k: [] for k in
                                             ("acceptance_rate", "step_size", "n_steps", "diverging", "lp")}
        self._prev_mean = 0.0
        self._prev_div = 0
        self._prev_leapfrog = 0

    def __call__(self, kernel: Any, params: Any, stage: str, i: int) -> None:
        n_leap = getattr(kernel, "n_leapfrog", None)
        steps = (n_leap - self._prev_leapfrog) if n_leap is not None else kernel.num_steps
        if n_leap is not None:
            self._prev_leapfrog = n_leap
        if stage != "Sample":
            self._prev_div = len(kernel._divergences)
            return
        n = len(self.rows["lp"]) + 1
        mean = float(kernel._mean_accept_prob)
        accept = n * mean - (n - 1) * self._prev_mean if n > 1 else mean
        self._prev_mean = mean
        div = len(kernel._divergences)
        self.rows["acceptance_rate"].append(min(max(accept, 0.0), 1.0))
        self.rows["step_size"].append(float(kernel.step_size))
        self.rows["n_steps"].append(float(steps))
        self.rows["diverging"].append(float(div > self._prev_div))
        self._prev_div = div
        pe = kernel._potential_energy_last
        self.rows["lp"].append(-float(pe) if pe is not None else math.nan)

    def tensors(self, tree_depth: bool, dtype: torch.dtype) -> dict[str, Tensor]:
        out = {k: torch.tensor(v, dtype=dtype) for k, v in self.rows.items()}
        out["diverging"] = out["diverging"].bool()
        out["n_steps"] = out["n_steps"].long()
        if tree_depth:
            # A tree of depth d takes between 2^(d-1) and 2^d - 1 leapfrog steps.
            out["tree_depth"] = torch.ceil(torch.log2(out["n_steps"].double() + 1)).long()
        return out


class _PyroMCMC(Engine):
    """Shared runner for Pyro's HMC-family kernels."""

    _tree = False

    def __init__(self, num_warmup: int, num_samples: int, num_chains: int, target_accept: float,
                 dense_mass: bool, step_size: float, adapt_step_size: bool, init: str,
                 seed: int | None) -> None:
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if int(num_warmup) < 0:
            raise ValueError(f"num_warmup must be >= 0, got {num_warmup}")
        if int(num_chains) < 1:
            raise ValueError(f"num_chains must be >= 1, got {num_chains}")
        if not 0.0 < float(target_accept) < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
        if not float(step_size) > 0.0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.num_warmup = int(num_warmup)
        self.num_samples = int(num_samples)
        self.num_chains = int(num_chains)
        self.target_accept = float(target_accept)
        self.dense_mass = bool(dense_mass)
        self.step_size = float(step_size)
        self.adapt_step_size = bool(adapt_step_size)
        if init not in ("prior", "module", "zeros"):
            raise ValueError(f"init must be 'prior', 'module' or 'zeros', got {init!r}")
        self.init = init
        self.seed = seed

    @abstractmethod
    def _kernel(self, **kw: Any) -> Any:
        """Pyro's kernel for ``potential_fn=`` or ``model=``, with this engine's settings."""

    def _common(self) -> dict[str, Any]:
        return dict(step_size=self.step_size, adapt_step_size=self.adapt_step_size, adapt_mass_matrix=True,
                    full_mass=self.dense_mass, target_accept_prob=self.target_accept)

    def fit(self, model: Any, x: Tensor, y: Tensor | None = None, progress: bool = True) -> Posterior:
        """Run ``num_chains`` chains of ``num_warmup + num_samples`` iterations on ``(x, y)``.

        Returns:
            Posterior with draws ``[num_chains, num_samples, ...]`` and per-draw stats.
        """
        x, y = prepare_data(model, x, y)
        seed0 = base_seed(self.seed)
        fast = has_fast_density(model)
        chains: list[dict[str, Tensor]] = []
        stats: list[dict[str, Tensor]] = []
        like = x if x.is_floating_point() else torch.zeros((), device=x.device)
        start = time.perf_counter()
        for c in range(self.num_chains):
            with seeded(seed0 + c, x):
                if fast:
                    def potential(params: dict[str, Tensor]) -> Tensor:
                        return -model.log_density(params, x, y)

                    kernel = self._kernel(potential_fn=potential)
                    init = model.init_params(like, strategy=self.init)
                    mcmc_args: tuple[Any, ...] = ()
                else:
                    kernel = self._kernel(model=model)
                    init = None
                    mcmc_args = (x, y)
                hook = _StatsHook(self.num_warmup)
                mcmc = pyro.infer.MCMC(kernel, num_samples=self.num_samples, warmup_steps=self.num_warmup,
                                       num_chains=1, initial_params=init, disable_progbar=not progress,
                                       hook_fn=hook)
                mcmc.run(*mcmc_args)
                draws = mcmc.get_samples()
                if fast:
                    with torch.no_grad():
                        draws = model.constrain(draws)
                chains.append({n: v.detach() for n, v in draws.items()})
                stats.append(hook.tensors(self._tree, like.dtype))
        seconds = time.perf_counter() - start
        samples = {n: torch.stack([ch[n] for ch in chains]) for n in chains[0]}
        stat = {n: torch.stack([s[n] for s in stats]).to(x.device) for n in stats[0]}
        attrs = {"engine": type(self).__name__, **self.settings(), "seed": seed0, "seconds": seconds}
        posterior = Posterior(samples, stat, model=model, data=(x, y), attrs=attrs)
        n_div = int(stat["diverging"].sum())
        if n_div:
            warnings.warn(divergence_message(n_div, self.num_chains * self.num_samples, self.target_accept),
                          RuntimeWarning, stacklevel=2)
        return posterior


class NUTS(_PyroMCMC):
    """The No-U-Turn sampler (Hoffman & Gelman 2014, arXiv:1111.4246) via Pyro.

    Args:
        num_warmup: adaptation iterations per chain (discarded).
        num_samples: draws kept per chain.
        num_chains: chains, run one after another with seeds ``seed + chain``.
        target_accept: dual-averaging target of the mean acceptance probability.
        max_tree_depth: cap on trajectory doublings (``2^depth - 1`` leapfrog steps).
        dense_mass: adapt a dense (instead of diagonal) inverse mass matrix.
        step_size: initial step size (the fixed one when ``adapt_step_size=False``).
        adapt_step_size: search a reasonable start and adapt by dual averaging in warm-up.
        init: start point for models with ``log_density``: ``"prior"`` (a prior draw),
            ``"module"`` (the module's current weights) or ``"zeros"``.
        seed: base seed; ``None`` draws one from torch's global generator.
    """

    _tree = True

    def __init__(self, num_warmup: int = 500, num_samples: int = 500, num_chains: int = 2,
                 target_accept: float = 0.8, max_tree_depth: int = 10, dense_mass: bool = False,
                 step_size: float = 0.1, adapt_step_size: bool = True, init: str = "prior",
                 seed: int | None = None) -> None:
        super().__init__(num_warmup, num_samples, num_chains, target_accept, dense_mass, step_size,
                         adapt_step_size, init, seed)
        if int(max_tree_depth) < 1:
            raise ValueError(f"max_tree_depth must be >= 1, got {max_tree_depth}")
        self.max_tree_depth = int(max_tree_depth)

    def _kernel(self, **kw: Any) -> Any:
        return _CountingNUTS(**kw, **self._common(), max_tree_depth=self.max_tree_depth)


class HMC(_PyroMCMC):
    """Static-trajectory Hamiltonian Monte Carlo via Pyro.

    Args:
        num_steps: leapfrog steps per trajectory (or set ``trajectory_length``).
        trajectory_length: total integration time; overrides ``num_steps`` when given
            (the step count then follows the adapted step size).
        Other arguments as for :class:`NUTS`.
    """

    def __init__(self, num_warmup: int = 500, num_samples: int = 500, num_chains: int = 2,
                 num_steps: int = 10, trajectory_length: float | None = None, target_accept: float = 0.8,
                 dense_mass: bool = False, step_size: float = 0.1, adapt_step_size: bool = True,
                 init: str = "prior", seed: int | None = None) -> None:
        super().__init__(num_warmup, num_samples, num_chains, target_accept, dense_mass, step_size,
                         adapt_step_size, init, seed)
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if trajectory_length is not None and not float(trajectory_length) > 0:
            raise ValueError(f"trajectory_length must be positive, got {trajectory_length}")
        self.num_steps = int(num_steps)
        self.trajectory_length = None if trajectory_length is None else float(trajectory_length)

    def _kernel(self, **kw: Any) -> Any:
        if self.trajectory_length is not None:
            return pyro.infer.HMC(**kw, **self._common(), trajectory_length=self.trajectory_length)
        return pyro.infer.HMC(**kw, **self._common(), num_steps=self.num_steps)
