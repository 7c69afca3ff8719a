"""Stochastic-gradient MCMC engines on minibatches: SGLD, SGHMC, adaptive SGHMC, cyclical SG-MCMC.

Pyro has no stochastic-gradient MCMC; these engines add it with the usual contract,
``Engine(...).fit(model, x, y, progress=True) -> Posterior``. The update rules are the pure
functions of :mod:`inference.sgmcmc_steps`; the runner here owns the minibatches, the
chains, the warm-up (burn-in, ``num_warmup``), thinning, the progress bar and the collected draws.

Data and minibatches:

* ``fit(model, x, y)`` with tensors: each chain draws its own minibatches of
  ``batch_size`` rows (a fresh random permutation per chain and epoch; ``batch_size=None``
  uses all rows every step, i.e. full-batch Langevin/Hamiltonian dynamics with a
  discretisation error only). The minibatch log-likelihood is rescaled by ``N / B``.
* ``fit(model, loader)`` with a ``torch.utils.data.DataLoader`` yielding ``(x, y)`` (``N =
  len(loader.dataset)``; leave ``batch_size=None``, the loader sets it): each step takes the
  loader's next ``num_chains`` batches, one per chain. Batches smaller than the first are
  skipped (``drop_last``). The posterior then holds no training data (``data=None``).

Models (through :func:`inference.density.make_potential`, the adapter every engine shares):

* anything with the functional form (``log_density(params, x, y, num_data=)``,
  ``init_params``, ``constrain``, e.g. :class:`bayesnets.bnn.BayesianNet`): the chains are
  vectorised with ``torch.func.vmap`` over ``[chains, D]`` flat parameters (each chain with
  its own minibatch), one call per step for all chains;
* any other Pyro model ``model(x, y)`` whose observations sit in a *subsampled* plate,
  e.g. ``pyro.plate("data", N, subsample_size=len(x))``, so that Pyro scales the minibatch
  log-likelihood by ``N / B`` itself. If the model takes a ``num_data`` keyword it is
  passed ``N`` (``BayesianNet.forward`` does). Its log density comes from Pyro's trace,
  vectorised over chains with ``vmap`` when the model allows it (else chain by chain, with a
  warning). Local latent variables inside the subsampled plate are not supported (they would
  change with the batch).

Per-draw statistics: ``lp`` (the minibatch estimate of the log joint in unconstrained
space at the draw), ``step_size`` and ``diverging`` (always False: a non-finite state stops
the run with a ``FloatingPointError`` that names the fix).

References: Welling & Teh 2011 (SGLD, ICML); Chen, Fox & Guestrin 2014 (SGHMC,
arXiv:1402.4102); Springenberg et al. 2016 (adaptive SGHMC, NeurIPS); Zhang et al. 2020
(cyclical SG-MCMC, arXiv:1902.03932).
"""

from __future__ import annotations

import itertools
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from inference import density
from inference.checks import check_choice, check_float, check_int, renamed_attributes, renamed_kwargs
from inference.data import loader_batches, minibatch_indices
from inference.engine import Engine, base_seed, chain_settings, float_like, prepare_data, seeded
from inference.posterior import Posterior
from inference.sgmcmc_steps import (
    SCHEDULES,
    AdaptiveSGHMCState,
    Schedule,
    SGHMCState,
    adaptive_sghmc_init,
    adaptive_sghmc_step,
    cycle_position,
    make_schedule,
    sghmc_init,
    sghmc_step,
    sgld_step,
)

__all__ = ["SGHMC", "SGLD", "AdaptiveSGHMC", "CyclicalSGMCMC"]

#: 0.2 moved the potentials to inference.density (one adapter for every engine); the old
#: names go in 0.3.
__getattr__ = renamed_attributes(__name__, {"Potential": "inference.density:Potential",
                                            "make_potential": "inference.density:make_potential"})

#: Iterations between checks that every chain is still finite (each check synchronises
#: with the device, so it is not done every step).
FINITE_CHECK_EVERY = 100


# ===================================================================== data plumbing
class _Data(NamedTuple):
    num_data: int
    batch_size: int
    probe: tuple[Tensor, Tensor | None]  # one checked minibatch
    stream: Iterator[tuple[Tensor, Tensor | None, bool]]  # (x, y, per_chain)
    full: tuple[Tensor, Tensor | None] | None  # the data for the Posterior


def _tensor_stream(x: Tensor, y: Tensor | None, batch_size: int,
                   num_chains: int) -> Iterator[tuple[Tensor, Tensor | None, bool]]:
    if batch_size == x.shape[0]:
        while True:
            yield x, y, False
    for idx in minibatch_indices(x.shape[0], batch_size, num_chains, x.device):
        yield x[idx], (y[idx] if y is not None else None), True


def _loader_stream(model: Any, loader: DataLoader,
                   num_chains: int) -> Iterator[tuple[Tensor, Tensor | None, bool]]:
    for group in loader_batches(loader, num_chains):
        checked = [prepare_data(model, xb, yb) for xb, yb in group]
        xs = torch.stack([xb for xb, _ in checked])
        ys = None if checked[0][1] is None else torch.stack([yb for _, yb in checked])
        yield xs, ys, True


def _resolve_data(model: Any, x: Tensor | DataLoader, y: Tensor | None, batch_size: int | None,
                  num_chains: int) -> _Data:
    """Check the data and build the per-step minibatch stream."""
    if isinstance(x, DataLoader):
        if y is not None:
            raise ValueError("with a DataLoader as data, pass y through the loader ((x, y) batches), not as y")
        if batch_size is not None:
            raise ValueError("batch_size is set by the DataLoader; leave the engine's batch_size=None")
        try:
            num_data = len(x.dataset)  # type: ignore[arg-type]
        except TypeError as err:
            raise TypeError("the DataLoader's dataset must have a length (N, for the N / B rescaling)") from err
        stream = _loader_stream(model, x, num_chains)
        first = next(stream)
        xb, yb = first[0][0], (first[1][0] if first[1] is not None else None)

        def chained() -> Iterator[tuple[Tensor, Tensor | None, bool]]:
            yield first
            yield from stream

        return _Data(num_data, xb.shape[0], (xb, yb), chained(), None)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor [N, ...] or a torch.utils.data.DataLoader, got "
                        f"{type(x).__name__}")
    x, y = prepare_data(model, x, y)
    num_data = x.shape[0]
    b = num_data if batch_size is None else int(batch_size)
    if not 1 <= b <= num_data:
        raise ValueError(f"batch_size must be between 1 and the number of observations N={num_data}, got {batch_size}")
    probe = (x[:b], y[:b] if y is not None else None)
    return _Data(num_data, b, probe, _tensor_stream(x, y, b, num_chains), (x, y))


# ===================================================================== Gibbs steps
#: A Gibbs step: constrained values of all sites ``{name: [chains, *shape]}`` -> new
#: constrained values for some of them.
Gibbs = Callable[[dict[str, Tensor]], dict[str, Tensor]]


def _gibbs_step(potential: density.Potential, z: Tensor, gibbs: Gibbs) -> Tensor:
    """Positions ``[C, D]`` with the sites ``gibbs`` returns overwritten (in unconstrained space)."""
    updates = gibbs(potential.constrain(z))
    unknown = set(updates) - set(potential.view.shapes)
    if unknown:
        raise ValueError(f"the gibbs step returned unknown sites {sorted(unknown)}; the model's sites are "
                         f"{list(potential.view.shapes)}")
    view = potential.view
    starts = dict(zip(view.shapes, itertools.accumulate([0, *view.sizes])))
    out = z.clone()
    for name, value in potential.unconstrain(updates).items():
        want = (z.shape[0], *view.shapes[name])
        if tuple(value.shape) != want:
            raise ValueError(f"the gibbs step must return {name!r} of shape {list(want)} ([chains, *site]), got "
                             f"{tuple(value.shape)}")
        out[:, starts[name]:starts[name] + math.prod(want[1:])] = value.reshape(z.shape[0], -1)
    return out


# ===================================================================== runner
class _SGMCMC(Engine):
    """Shared runner: chains, minibatches, warm-up (burn-in), thinning, progress, collection."""

    def __init__(self, step_size: float | Schedule, schedule: str, temperature: float, num_warmup: int,
                 num_samples: int, thinning: int, num_chains: int, batch_size: int | None, init: str,
                 seed: int | None) -> None:
        self.num_warmup, self.num_samples, self.num_chains, self.init = chain_settings(
            num_warmup, num_samples, num_chains, init)
        self.thinning = check_int(thinning, "thinning")
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size")
        self.temperature = check_float(temperature, "temperature", 0.0)
        self.seed = seed
        self.step_size = None if callable(step_size) else step_size
        self.schedule = "custom" if callable(step_size) else schedule
        # Built (and so validated) now: bad step sizes and unknown schedules fail at construction.
        self._schedule_fn = self._make_schedule(step_size, schedule)

    # ---------------------------------------------------------------- hooks
    def _make_schedule(self, step_size: float | Schedule, schedule: str) -> Schedule:
        if schedule == "cyclical":
            raise ValueError(f"schedule='cyclical' belongs to CyclicalSGMCMC; {type(self).__name__} takes "
                             f"one of {tuple(s for s in SCHEDULES if s != 'cyclical')} or a callable step_size")
        return make_schedule(step_size, schedule, num_steps=self._num_iterations())

    def _num_iterations(self) -> int:
        return self.num_warmup + self.num_samples * self.thinning

    def _collect_at(self) -> list[int]:
        """Iterations (from 0) whose starting state is kept as a draw."""
        return [self.num_warmup + (j + 1) * self.thinning - 1 for j in range(self.num_samples)]

    def _noisy(self, k: int) -> bool:
        return self.temperature > 0

    @abstractmethod
    def _init_state(self, z: Tensor) -> Any:
        """The sampler state at positions ``z`` ``[C, D]``."""

    @abstractmethod
    def _update(self, state: Any, grad: Tensor, step_size: float, k: int, noise: Tensor | None) -> Any:
        """One update from the pure steps of :mod:`inference.sgmcmc_steps`."""

    # ------------------------------------------------------------------ fit
    def fit(self, model: Any, x: Tensor | DataLoader, y: Tensor | None = None, progress: bool = True,
            gibbs: Gibbs | None = None, gibbs_every: int = 1) -> Posterior:
        """Run ``num_chains`` vectorised chains on minibatches of ``(x, y)`` (or of a DataLoader).

        Args:
            model: a model with ``log_density`` (e.g. ``BayesianNet``) or a Pyro model whose
                observations sit in a subsampled plate.
            x: inputs ``[N, ...]``, or a ``DataLoader`` yielding ``(x, y)`` batches.
            y: targets for ``x`` (``None`` with a DataLoader).
            progress: show a tqdm bar.
            gibbs: an optional Gibbs step interleaved with the dynamics: called every
                ``gibbs_every`` iterations with the constrained values of all sites
                ``{name: [chains, *shape]}``, it returns new constrained values for some sites
                (e.g. ``HierarchicalGaussian.gibbs_update``, the conjugate precision draws of
                Tran et al.'s GPi-H sampler); those coordinates are overwritten, momenta kept.
            gibbs_every: iterations between Gibbs steps.

        Returns:
            Posterior with draws ``[num_chains, num_samples, ...]`` and per-draw stats ``lp``,
            ``step_size`` and ``diverging``.

        Raises:
            ValueError: bad data or ``batch_size`` (e.g. larger than ``N``).
            FloatingPointError: a chain became non-finite (lower the step size).
        """
        if gibbs is not None and not callable(gibbs):
            raise TypeError(f"gibbs must be a callable (constrained params) -> updates, got {type(gibbs).__name__}")
        gibbs_every = check_int(gibbs_every, "gibbs_every")
        data = _resolve_data(model, x, y, self.batch_size, self.num_chains)
        like = float_like(data.probe[0])
        seed0 = base_seed(self.seed)
        total = self._num_iterations()
        collect = self._collect_at()
        slot = dict(zip(collect, range(len(collect))))
        start = time.perf_counter()
        with seeded(seed0, like):
            # SG-MCMC's numerics of 0.1 (same draws): vmapped forward, one backward pass, no MLP form.
            potential = density.make_potential(model, data.probe[0], data.probe[1], data.num_data, mlp=False)
            z = potential.init(self.num_chains, self.init, like)
            state = self._init_state(z)
            draws = torch.empty(len(collect), *z.shape, dtype=z.dtype, device=z.device)
            lps = torch.empty(len(collect), self.num_chains, dtype=z.dtype, device=z.device)
            steps = torch.empty(len(collect), dtype=z.dtype)
            bar = tqdm(range(total), desc=type(self).__name__, disable=not progress, leave=False)
            for k in bar:
                xb, yb, per_chain = next(data.stream)
                pos = state.params
                grad, lp = potential(pos, xb, yb, per_chain)
                eps = float(self._schedule_fn(k))
                if not (math.isfinite(eps) and eps > 0):
                    raise ValueError(f"the step-size schedule gave {eps} at iteration {k}; it must stay positive")
                if k in slot:
                    draws[slot[k]] = pos
                    lps[slot[k]] = lp
                    steps[slot[k]] = eps
                noise = torch.randn_like(pos) if self._noisy(k) else None
                state = self._update(state, grad, eps, k, noise)
                if gibbs is not None and (k + 1) % gibbs_every == 0:
                    self._check_finite(state.params, k, eps)  # a diverged chain, not the Gibbs step, is at fault
                    state = state._replace(params=_gibbs_step(potential, state.params, gibbs))
                if (k + 1) % FINITE_CHECK_EVERY == 0 or k + 1 == total:
                    self._check_finite(state.params, k, eps)
                    if progress:
                        bar.set_postfix(lp=f"{float(lp.mean()):.4g}")
        seconds = time.perf_counter() - start
        samples = potential.constrain(draws.transpose(0, 1))
        samples = {n: v.detach() for n, v in samples.items()}
        shape = (self.num_chains, len(collect))
        stats = {
            "lp": lps.T.contiguous(),
            "step_size": steps.to(z.device).expand(shape).contiguous(),
            "diverging": torch.zeros(shape, dtype=torch.bool, device=z.device),
        }
        attrs = {"engine": type(self).__name__, **self.settings(), "seed": seed0, "seconds": seconds,
                 "num_data": data.num_data, "batch_size": data.batch_size, "num_iterations": total}
        if gibbs is not None:
            attrs["gibbs_every"] = gibbs_every
        return Posterior(samples, stats, model=model, data=data.full, attrs=attrs)

    def _check_finite(self, params: Tensor, k: int, eps: float) -> None:
        bad = ~torch.isfinite(params).all(-1)
        if bool(bad.any()):
            chains = bad.nonzero().flatten().tolist()
            raise FloatingPointError(
                f"{type(self).__name__}: chain(s) {chains} became non-finite by iteration {k + 1} (step size "
                f"{eps:.3g}); lower step_size, or use larger batches (less gradient noise)"
            )


# ===================================================================== engines
class SGLD(_SGMCMC):
    """Stochastic-gradient Langevin dynamics (Welling & Teh 2011, ICML).

    ``theta' = theta + eps/2 grad log p~(theta) + sqrt(eps T) xi`` on minibatch gradients
    (likelihood rescaled by ``N / B``). Its stationary law differs from the posterior by
    ``O(eps)``: lower ``step_size`` (or use ``schedule="polynomial"``) for less bias.

    Args:
        step_size: ``eps`` (float) or a callable ``k -> eps_k`` over iterations ``k = 0, 1, ...``.
        schedule: ``"constant"`` or ``"polynomial"`` (``eps (1 + k / (K/10))^-0.55`` over the
            ``K`` iterations) for a float ``step_size``.
        temperature: ``T >= 0``; the chains target ``p^(1/T)`` (0: gradient ascent).
        num_warmup: iterations discarded first (burn-in; ``num_burnin`` is its name before 0.2,
            accepted with a ``DeprecationWarning`` until 0.3).
        num_samples: draws kept per chain.
        thinning: keep every ``thinning``-th iteration after warm-up.
        num_chains: chains, vectorised.
        batch_size: rows per minibatch (``None``: all rows, i.e. full-batch gradients).
        init: ``"prior"``, ``"module"`` (``BayesianNet``'s current weights) or ``"zeros"``
            (unconstrained), as for :class:`inference.hmc.NUTS`.
        seed: base seed; ``None`` draws one from torch's global generator.
    """

    @renamed_kwargs(num_burnin="num_warmup")
    def __init__(self, step_size: float | Schedule = 1e-4, schedule: str = "constant", temperature: float = 1.0,
                 num_warmup: int = 1000, num_samples: int = 1000, thinning: int = 1, num_chains: int = 4,
                 batch_size: int | None = None, init: str = "prior", seed: int | None = None) -> None:
        super().__init__(step_size, schedule, temperature, num_warmup, num_samples, thinning, num_chains,
                         batch_size, init, seed)

    def _init_state(self, z: Tensor) -> SGHMCState:
        return SGHMCState(z, z)  # SGLD has no momentum; the field is unused

    def _update(self, state: SGHMCState, grad: Tensor, step_size: float, k: int,
                noise: Tensor | None) -> SGHMCState:
        new = sgld_step(state.params, grad, step_size, self.temperature, noise)
        return SGHMCState(new, new)


def _check_friction(friction: float, noise_estimate: float, temperature: float) -> tuple[float, float]:
    """``(friction, noise_estimate)`` checked: both >= 0, and the injected noise variance
    ``2 eps (C T - B)`` not negative."""
    friction = check_float(friction, "friction", 0.0)
    noise_estimate = check_float(noise_estimate, "noise_estimate", 0.0)
    if temperature > 0 and noise_estimate > friction * temperature:
        raise ValueError(f"noise_estimate ({noise_estimate}) must not exceed friction * temperature "
                         f"({friction * temperature}): the injected noise variance would be negative")
    return friction, noise_estimate


class SGHMC(_SGMCMC):
    """Stochastic-gradient Hamiltonian Monte Carlo with friction (Chen et al. 2014, arXiv:1402.4102).

    ``r' = (1 - eps C) r + eps grad log p~ + N(0, 2 eps (C T - B))``, ``theta' = theta + eps r'``
    (unit mass, momenta start at zero). In SGD terms this is learning rate ``eps^2`` and
    momentum ``1 - eps C``: with ``temperature=0`` the chains are exactly
    ``torch.optim.SGD(lr=eps**2, momentum=1 - eps*C)`` on ``-log p``.

    Args:
        step_size: ``eps`` (float) or a callable ``k -> eps_k``.
        friction: ``C >= 0``; the momentum decays by ``eps C`` per step (default 5 gives the
            0.05 decay of Springenberg et al. at ``eps = 0.01``); needs ``eps C <= 1``.
        noise_estimate: ``B``, an estimate of the gradient noise ``eps V / 2`` subtracted from
            the injected variance (0: none, the usual choice).
        Other arguments as for :class:`SGLD`.
    """

    @renamed_kwargs(num_burnin="num_warmup")
    def __init__(self, step_size: float | Schedule = 1e-2, friction: float = 5.0, noise_estimate: float = 0.0,
                 schedule: str = "constant", temperature: float = 1.0, num_warmup: int = 1000,
                 num_samples: int = 1000, thinning: int = 1, num_chains: int = 4, batch_size: int | None = None,
                 init: str = "prior", seed: int | None = None) -> None:
        super().__init__(step_size, schedule, temperature, num_warmup, num_samples, thinning, num_chains,
                         batch_size, init, seed)
        self.friction, self.noise_estimate = _check_friction(friction, noise_estimate, self.temperature)
        if self.step_size is not None and self.step_size * self.friction > 1:
            raise ValueError(f"step_size * friction must be <= 1 (momentum decay per step), got "
                             f"{self.step_size * self.friction}")

    def _init_state(self, z: Tensor) -> SGHMCState:
        return sghmc_init(z)

    def _update(self, state: SGHMCState, grad: Tensor, step_size: float, k: int,
                noise: Tensor | None) -> SGHMCState:
        return sghmc_step(state, grad, step_size, self.friction, self.noise_estimate, self.temperature, noise)


class AdaptiveSGHMC(_SGMCMC):
    """SGHMC with the burn-in preconditioner of Springenberg et al. (2016, NeurIPS), as in BOHAMIANN.

    During the ``num_warmup`` (burn-in) iterations a per-coordinate estimate of the squared gradient
    (with a self-tuned averaging window) sets the preconditioner ``v_hat^(-1/2)``; it is then
    frozen, so the kept draws come from plain preconditioned SGHMC. This is the sampler of the
    BNN surrogates of Li et al. (P24) and of the functional-prior paper (P38).

    Args:
        step_size: the paper's ``eps`` (pybnn's ``lr``; default 1e-2 as there).
        momentum_decay: ``mdecay`` in ``[0, 1]`` (default 0.05 as in the paper).
        num_warmup: adaptation iterations (discarded; ``num_burnin`` before 0.2).
        Other arguments as for :class:`SGLD`.
    """

    @renamed_kwargs(num_burnin="num_warmup")
    def __init__(self, step_size: float | Schedule = 1e-2, momentum_decay: float = 0.05,
                 schedule: str = "constant", temperature: float = 1.0, num_warmup: int = 1000,
                 num_samples: int = 1000, thinning: int = 1, num_chains: int = 4, batch_size: int | None = None,
                 init: str = "prior", seed: int | None = None) -> None:
        self.momentum_decay = check_float(momentum_decay, "momentum_decay", 0.0, 1.0)
        super().__init__(step_size, schedule, temperature, num_warmup, num_samples, thinning, num_chains,
                         batch_size, init, seed)

    def _init_state(self, z: Tensor) -> AdaptiveSGHMCState:
        return adaptive_sghmc_init(z)

    def _update(self, state: AdaptiveSGHMCState, grad: Tensor, step_size: float, k: int,
                noise: Tensor | None) -> AdaptiveSGHMCState:
        return adaptive_sghmc_step(state, grad, step_size, self.momentum_decay, self.temperature,
                                   adapt=k < self.num_warmup, noise=noise)


class CyclicalSGMCMC(_SGMCMC):
    """Cyclical SG-MCMC (Zhang et al. 2020, arXiv:1902.03932): cosine step-size cycles.

    The run is ``num_cycles`` cycles of ``cycle_length`` iterations; the step falls from
    ``step_size`` to near zero in each cycle (``eps_k = eps_0/2 (cos(pi r_k) + 1)``). The first
    ``exploration`` fraction of a cycle runs without noise (SGD, or SGD with momentum for
    ``sampler="sghmc"``) to find a new mode; the rest samples, and the last
    ``num_samples / num_cycles`` draws of each cycle (``thinning`` apart) are kept. There is no
    separate burn-in: each cycle's exploration stage plays that role.

    Args:
        step_size: ``eps_0``, the step at the start of each cycle.
        num_cycles: ``M``.
        cycle_length: iterations per cycle ``L``.
        num_samples: draws kept per chain in total; a multiple of ``num_cycles``.
        exploration: ``beta``, the noise-free fraction of each cycle (default 0.8; Zhang et
            al.'s CIFAR script turns noise on in the last 5 of 50 epochs, i.e. 0.9).
        sampler: ``"sgld"`` or ``"sghmc"``.
        friction, noise_estimate: SGHMC's ``C`` and ``B`` (``sampler="sghmc"``).
        Other arguments as for :class:`SGLD`.
    """

    def __init__(self, step_size: float = 1e-2, num_cycles: int = 4, cycle_length: int = 1000,
                 num_samples: int = 40, exploration: float = 0.8, sampler: str = "sghmc", friction: float = 5.0,
                 noise_estimate: float = 0.0, temperature: float = 1.0, thinning: int = 1, num_chains: int = 4,
                 batch_size: int | None = None, init: str = "prior", seed: int | None = None) -> None:
        self.sampler = check_choice(sampler, "sampler", ("sgld", "sghmc"))
        self.num_cycles = check_int(num_cycles, "num_cycles")
        self.cycle_length = check_int(cycle_length, "cycle_length")
        self.exploration = check_float(exploration, "exploration", 0.0, 1.0, high_open=True)
        if check_int(num_samples, "num_samples") % self.num_cycles:
            raise ValueError(f"num_samples ({num_samples}) must be a multiple of num_cycles ({num_cycles})")
        self.friction, self.noise_estimate = _check_friction(friction, noise_estimate,
                                                             check_float(temperature, "temperature", 0.0))
        super().__init__(step_size, "cyclical", temperature, 0, num_samples, thinning, num_chains, batch_size,
                         init, seed)
        per_cycle = self.num_samples // self.num_cycles
        first = self.cycle_length - 1 - (per_cycle - 1) * self.thinning
        if first < math.ceil(self.exploration * self.cycle_length):
            raise ValueError(
                f"{per_cycle} draws per cycle, thinning {self.thinning}, do not fit in the sampling stage "
                f"(last {1 - self.exploration:.2f} of {self.cycle_length} iterations): lower num_samples or "
                "thinning, or raise cycle_length"
            )
        if sampler == "sghmc" and float(step_size) * self.friction > 1:
            raise ValueError(f"step_size * friction must be <= 1, got {float(step_size) * self.friction}")

    def _make_schedule(self, step_size: float | Schedule, schedule: str) -> Schedule:
        if callable(step_size):
            raise TypeError("CyclicalSGMCMC builds its own cosine schedule: step_size must be a float")
        return make_schedule(step_size, "cyclical", cycle_length=self.cycle_length)

    def _num_iterations(self) -> int:
        return self.num_cycles * self.cycle_length

    def _collect_at(self) -> list[int]:
        per_cycle = self.num_samples // self.num_cycles
        out = []
        for m in range(self.num_cycles):
            end = (m + 1) * self.cycle_length - 1
            out.extend(end - j * self.thinning for j in reversed(range(per_cycle)))
        return out

    def _noisy(self, k: int) -> bool:
        return self.temperature > 0 and cycle_position(k, self.cycle_length) >= self.exploration

    def _init_state(self, z: Tensor) -> SGHMCState:
        return sghmc_init(z)

    def _update(self, state: SGHMCState, grad: Tensor, step_size: float, k: int,
                noise: Tensor | None) -> SGHMCState:
        if self.sampler == "sgld":
            new = sgld_step(state.params, grad, step_size, self.temperature, noise)
            return SGHMCState(new, state.momentum)
        return sghmc_step(state, grad, step_size, self.friction, self.noise_estimate, self.temperature, noise)
