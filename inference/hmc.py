"""HMC and NUTS through Pyro's MCMC, returning a :class:`~inference.posterior.Posterior`.

Models with a fast functional form (``log_density``, e.g. :class:`bayesnets.bnn.BayesianNet`)
are sampled through a ``potential_fn`` built from it, which skips Pyro's per-step
tracing; any other Pyro model ``model(x, y)`` is sampled through its trace. Chains run
one after another in this process (Pyro's multi-process chains hang or fail on several
platforms and cannot share a GPU), each with its own seed and its own warm-up:
step-size dual averaging towards ``target_accept`` and a (diagonal or dense) mass matrix
from Stan's windowed adaptation.

:class:`BatchedHMC` is different: all chains advance together as one ``[chains, D]``
tensor program (one vectorised gradient call serves every chain), with static-length,
jittered, Metropolis-corrected HMC whose trajectory length is tuned by ChEES; see its
docstring and :mod:`inference.integrators` / :mod:`inference.adaptation`.

Per-draw statistics (ArviZ names): ``diverging``, ``acceptance_rate``, ``step_size``,
``n_steps`` (leapfrog steps), ``tree_depth`` (NUTS), ``energy`` (BatchedHMC) and ``lp``
(log joint density in unconstrained space, i.e. minus the potential energy).
"""

from __future__ import annotations

import math
import time
import warnings
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.infer
import torch
from torch import Tensor
from tqdm.auto import tqdm

from inference.adaptation import (
    chees_init,
    chees_raise,
    chees_restart_average,
    chees_trajectory_length,
    chees_update,
    dual_averaging_init,
    dual_averaging_step_size,
    dual_averaging_update,
    find_reasonable_step_size,
    halton,
    mass_matrix_windows,
    welford_covariance,
    welford_init,
    welford_update,
)
from inference.checks import check_float, check_int, positive_float, renamed_kwargs
from inference.density import FlatView, Potential, autograd_grad_and_value, make_potential
from inference.diagnostics import divergence_message
from inference.engine import Engine, base_seed, chain_settings, float_like, has_fast_density, prepare_data, seeded
from inference.integrators import (
    GradAndValue,
    StepFn,
    kinetic_energy,
    leapfrog,
    leapfrog_step,
    mass_matrix_factor,
    sample_momentum,
    velocity,
)
from inference.posterior import OBS, Posterior

__all__ = ["HMC", "NUTS", "BatchedHMC", "HMCRun", "ascend", "compile_leapfrog_step", "run_batched_hmc"]


def _check_target_accept(target_accept: float) -> float:
    return check_float(target_accept, "target_accept", 0.0, 1.0, low_open=True, high_open=True)


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
        self.num_warmup, self.num_samples, self.num_chains, self.init = chain_settings(
            num_warmup, num_samples, num_chains, init)
        self.target_accept = _check_target_accept(target_accept)
        self.dense_mass = bool(dense_mass)
        self.step_size = positive_float(step_size, "step_size")
        self.adapt_step_size = bool(adapt_step_size)
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
        like = float_like(x)
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
        self.max_tree_depth = check_int(max_tree_depth, "max_tree_depth")

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
        self.num_steps = check_int(num_steps, "num_steps")
        self.trajectory_length = None if trajectory_length is None else positive_float(trajectory_length,
                                                                                       "trajectory_length")

    def _kernel(self, **kw: Any) -> Any:
        if self.trajectory_length is not None:
            return pyro.infer.HMC(**kw, **self._common(), trajectory_length=self.trajectory_length)
        return pyro.infer.HMC(**kw, **self._common(), num_steps=self.num_steps)


# ====================================================================== batched HMC
#: Stan's divergence rule: a transition whose energy error exceeds this is divergent.
DIVERGENCE_ENERGY = 1000.0
#: Start of the step-size search when no step_size is given (Stan's default).
INIT_STEP_SIZE = 1.0
#: One time unit: after each mass-matrix update the posterior is roughly standardised in the
#: new metric, where a shorter trajectory moves each coordinate by less than about one
#: posterior standard deviation (the ChEES optimum for a jittered standard normal is 2.25).
#: ChEES's gradient is weak and noisy at very short lengths, so it may never leave them: the
#: trajectory length starts here (before any metric update, this suits priors of unit
#: scale, as weight priors are) and is raised to at least this after each update; ChEES
#: may lower it in between.
UNIT_TRAJECTORY_LENGTH = 1.0


class HMCRun(NamedTuple):
    """What :func:`run_batched_hmc` returns.

    Attributes:
        draws: positions after warm-up ``[chains, num_samples, D]`` (unconstrained).
        stats: per-draw statistics ``[chains, num_samples]`` with ArviZ's names.
        step_size: adapted step size per chain ``[chains]``.
        inverse_mass_matrix: adapted ``[chains, D]`` (diagonal) or ``[chains, D, D]`` (dense).
        trajectory_length: the (shared) un-jittered trajectory length after warm-up.
    """

    draws: Tensor
    stats: dict[str, Tensor]
    step_size: Tensor
    inverse_mass_matrix: Tensor
    trajectory_length: float


def _initial_inverse_mass(inverse_mass_matrix: Tensor | None, z: Tensor, dense: bool) -> Tensor:
    """Validate a user's inverse mass matrix (or make the identity), ``[chains, D(, D)]``."""
    chains, d = z.shape
    if inverse_mass_matrix is None:
        if dense:
            return torch.eye(d, dtype=z.dtype, device=z.device).expand(chains, d, d).clone()
        return torch.ones_like(z)
    if not isinstance(inverse_mass_matrix, Tensor):
        raise TypeError(f"inverse_mass_matrix must be a torch.Tensor, got {type(inverse_mass_matrix).__name__}")
    m = inverse_mass_matrix.to(dtype=z.dtype, device=z.device)
    shapes = [(d, d), (chains, d, d)] if dense else [(d,), (chains, d)]
    if tuple(m.shape) not in shapes:
        kind = "dense (dense_mass=True)" if dense else "diagonal (dense_mass=False)"
        want = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(f"inverse_mass_matrix must be {kind} with shape {want} for {chains} chains of "
                         f"D={d} parameters, got shape {list(m.shape)}")
    m = m.expand((chains, *shapes[0])).clone()
    if not bool(torch.isfinite(m).all()):
        raise ValueError("inverse_mass_matrix contains NaN or infinite values")
    if dense:
        if bool((torch.linalg.cholesky_ex(m).info != 0).any()):
            raise ValueError("inverse_mass_matrix must be symmetric positive definite")
    elif not bool((m > 0).all()):
        raise ValueError("inverse_mass_matrix (diagonal) must be positive")
    return m


@renamed_kwargs(value_and_grad="grad_and_value")
def run_batched_hmc(grad_and_value: GradAndValue, init: Tensor, *, num_warmup: int, num_samples: int,
                    target_accept: float = 0.8, step_size: float | None = None, adapt_step_size: bool = True,
                    trajectory_length: float | None = None, adapt_trajectory_length: bool = True,
                    inverse_mass_matrix: Tensor | None = None, dense_mass: bool = False,
                    adapt_mass_matrix: bool = True, max_num_steps: int = 1024, jitter: bool = True,
                    compile: bool = False, generator: torch.Generator | None = None, progress: bool = False,
                    describe: Callable[[int, Tensor, Tensor], str] | None = None) -> HMCRun:
    """Run Metropolis-corrected HMC on every chain at once (the engine behind :class:`BatchedHMC`).

    Each iteration draws a momentum per chain, integrates chain ``c`` for
    ``n_c = ceil(u * T / step_size_c)`` leapfrog steps (``u`` from a Halton sequence when
    ``jitter``, ``T`` the trajectory length, at most ``max_num_steps``) in one batched
    program, and accepts or rejects each chain's proposal by its own energy error.

    Warm-up, per chain: dual-averaging step size towards ``target_accept`` and a Welford
    (diagonal or dense) inverse mass matrix over Stan's windows, with the step size searched
    afresh after each metric update. Shared: the ChEES trajectory length ``T``.

    Args:
        grad_and_value: ``fn(z [chains, D]) -> (grad [chains, D], log_density [chains])``
            (e.g. :meth:`inference.density.Potential.bind`).
        init: start points ``[chains, D]`` (unconstrained).
        num_warmup, num_samples: iterations of warm-up (discarded) and draws kept.
        target_accept: dual-averaging target of the mean acceptance probability.
        step_size: first step size (default: found by Hoffman & Gelman's search from 1).
        adapt_step_size: adapt by dual averaging during warm-up.
        trajectory_length: (first) trajectory length ``T``; default 1.
        adapt_trajectory_length: tune ``T`` by ChEES during warm-up (needs >= 2 chains).
        inverse_mass_matrix: first inverse mass matrix ``[D]``/``[chains, D]`` (diagonal) or
            ``[D, D]``/``[chains, D, D]`` (``dense_mass``); default identity.
        dense_mass: estimate a dense (not diagonal) inverse mass matrix.
        adapt_mass_matrix: estimate it from warm-up draws.
        max_num_steps: cap on leapfrog steps per transition.
        jitter: draw the trajectory length from ``(0, T]`` each iteration (Halton sequence).
        compile: trace the leapfrog step once and compile it (see :func:`compile_leapfrog_step`).
        generator: random stream for momenta and acceptance (default: torch's global one).
        progress: show a tqdm bar.
        describe: ``fn(chain, z_c, grad_c) -> str`` naming the culprit when the log density
            or its gradient is not finite at the start.

    Returns:
        An :class:`HMCRun`.

    Raises:
        ValueError: for a non-finite log density or gradient at ``init``, or bad settings.
    """
    if init.dim() != 2 or init.shape[0] < 1 or init.shape[1] < 1:
        raise ValueError(f"init must have shape [chains, D] with chains >= 1, got {list(init.shape)}")
    if not init.is_floating_point():
        raise TypeError(f"init must be a floating-point tensor, got {init.dtype}")
    if adapt_trajectory_length and num_warmup > 0 and init.shape[0] < 2:
        raise ValueError("ChEES trajectory-length adaptation is a cross-chain criterion and needs num_chains >= 2; "
                         "use more chains, or adapt_trajectory_length=False with a trajectory_length")
    z = init.detach().clone()
    chains, d = z.shape
    imm = _initial_inverse_mass(inverse_mass_matrix, z, dense_mass)
    factor = mass_matrix_factor(imm)
    grad, lp = grad_and_value(z)
    bad = ~(torch.isfinite(lp) & torch.isfinite(grad).all(-1))
    if bool(bad.any()):
        c = int(bad.nonzero()[0, 0])
        where = describe(c, z[c], grad[c]) if describe is not None else _describe_flat(z[c], grad[c])
        raise ValueError(f"the log density at the start point of chain {c} is {float(lp[c])} (gradient finite: "
                         f"{bool(torch.isfinite(grad[c]).all())}); {where}. Choose another init (e.g. "
                         "init='zeros' or a prior draw) or check the model and data for values outside "
                         "their support.")

    first = torch.full((chains,), INIT_STEP_SIZE if step_size is None else float(step_size),
                       dtype=z.dtype, device=z.device)
    eps = find_reasonable_step_size(z, lp, grad, first, imm, grad_and_value, generator) if adapt_step_size else first
    da = dual_averaging_init(eps)
    t_len = float(trajectory_length) if trajectory_length is not None else UNIT_TRAJECTORY_LENGTH
    chees = chees_init(t_len)
    adapt_t = adapt_trajectory_length and num_warmup > 0
    step_fn = compile_leapfrog_step(grad_and_value, z, imm) if compile else None
    windows = mass_matrix_windows(num_warmup) if adapt_mass_matrix else []
    window_of = {i: w for w in windows for i in range(*w)}
    welford = welford_init(z, dense_mass)

    draws = z.new_empty((chains, num_samples, d))
    rows = {k: z.new_empty((chains, num_samples)) for k in ("acceptance_rate", "step_size", "energy", "lp")}
    rows["n_steps"] = torch.empty((chains, num_samples), dtype=torch.long, device=z.device)
    rows["diverging"] = torch.empty((chains, num_samples), dtype=torch.bool, device=z.device)

    total = num_warmup + num_samples
    bar = tqdm(total=total, desc="BatchedHMC", disable=not progress, leave=False)
    for i in range(total):
        warm = i < num_warmup
        u = halton(i) if jitter else 1.0
        n = torch.ceil(u * t_len / eps).clamp(1, max_num_steps).long()
        p0 = sample_momentum(factor, z, generator)
        z1, p1, g1, lp1 = leapfrog(z, p0, grad, eps, imm, grad_and_value, n, step_fn)
        h0 = kinetic_energy(p0, imm) - lp
        h1 = kinetic_energy(p1, imm) - lp1
        # A non-finite end point is a certain rejection (and a divergence).
        dh = torch.where(torch.isfinite(h1), h1 - h0, torch.full_like(h1, math.inf))
        accept_prob = torch.exp(-dh).clamp(max=1.0)
        log_u = torch.rand(chains, dtype=z.dtype, device=z.device, generator=generator).log()
        accept = log_u < -dh
        z_prev = z
        z = torch.where(accept.unsqueeze(-1), z1, z)
        grad = torch.where(accept.unsqueeze(-1), g1, grad)
        lp = torch.where(accept, lp1, lp)
        if warm:
            if adapt_step_size:
                da = dual_averaging_update(da, accept_prob, target_accept)
                eps = dual_averaging_step_size(da)
            if adapt_t:
                chees = chees_update(chees, z_prev, z1, velocity(p1, imm), accept_prob, u,
                                     max_trajectory_length=max_num_steps * float(eps.max()))
                t_len = chees_trajectory_length(chees)
            window = window_of.get(i)
            if window is not None:
                welford = welford_update(welford, z)
                if i == window[1] - 1:
                    imm = welford_covariance(welford)
                    factor = mass_matrix_factor(imm)
                    welford = welford_init(z, dense_mass)
                    if adapt_step_size:
                        eps = find_reasonable_step_size(z, lp, grad, eps, imm, grad_and_value, generator)
                        da = dual_averaging_init(eps)
                    if adapt_t:
                        chees = chees_restart_average(chees_raise(chees, UNIT_TRAJECTORY_LENGTH))
                        t_len = chees_trajectory_length(chees)
            if i == num_warmup - 1:
                if adapt_step_size:
                    eps = dual_averaging_step_size(da, final=True)
                if adapt_t:
                    t_len = chees_trajectory_length(chees, final=True)
        else:
            s = i - num_warmup
            draws[:, s] = z
            rows["acceptance_rate"][:, s] = accept_prob
            rows["step_size"][:, s] = eps
            rows["energy"][:, s] = torch.where(accept, h1, h0)
            rows["lp"][:, s] = lp
            rows["n_steps"][:, s] = n
            rows["diverging"][:, s] = dh > DIVERGENCE_ENERGY
        bar.update(1)
    bar.close()
    return HMCRun(draws, rows, eps, imm, t_len)


@renamed_kwargs(value_and_grad="grad_and_value", steps="num_steps")
def ascend(grad_and_value: GradAndValue, z0: Tensor, num_steps: int, lr: float = 1e-2) -> Tensor:
    """Adam ascent of every chain's log density from ``z0`` ``[chains, D]``; the best point of each chain.

    Li, Rudner & Wilson (arXiv 2305.20028) start their HMC chain from a network pre-trained by
    Adam: from a prior draw, a few hundred leapfrog steps of warm-up do not reach the region
    where the network fits the data, and the chain spends its short run explaining the data as
    noise. Adam is elementwise, so the chains stay independent (one batched gradient call per
    step serves them all).

    Args:
        grad_and_value: ``fn(z [chains, D]) -> (grad [chains, D], log_density [chains])``.
        z0: start points ``[chains, D]``.
        num_steps: Adam steps (0 returns ``z0``; ``steps`` before 0.2).
        lr: Adam's learning rate.

    Returns:
        ``[chains, D]``: per chain, the visited point with the highest finite log density
        (``z0``'s row when no step improved on it).
    """
    num_steps, lr = check_int(num_steps, "num_steps", 0), positive_float(lr, "lr")
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best, best_lp = z0.detach().clone(), torch.full(z0.shape[:1], -math.inf, dtype=z0.dtype, device=z0.device)
    for i in range(num_steps + 1):
        grad, lp = grad_and_value(z.detach())
        ok = torch.isfinite(lp) & torch.isfinite(grad).all(-1)
        better = ok & (lp > best_lp)
        best = torch.where(better.unsqueeze(-1), z.detach(), best)
        best_lp = torch.where(better, lp, best_lp)
        if i == num_steps:
            break
        # a chain that left the finite region restarts from its best point
        z.data = torch.where(ok.unsqueeze(-1), z.detach(), best)
        z.grad = torch.where(ok.unsqueeze(-1), -grad, torch.zeros_like(grad))
        opt.step()
    return best


def _describe_flat(z: Tensor, grad: Tensor) -> str:
    """Name the coordinates of a flat parameter vector that are not finite."""
    bad_z = (~torch.isfinite(z)).nonzero().flatten().tolist()
    bad_g = (~torch.isfinite(grad)).nonzero().flatten().tolist()
    parts = []
    if bad_z:
        parts.append(f"non-finite start values at coordinates {bad_z[:10]}")
    if bad_g:
        parts.append(f"non-finite gradient at coordinates {bad_g[:10]}")
    return "; ".join(parts) or "every coordinate and gradient entry is finite, but the log density is not"


def _describe_sites(potential: Potential, model: Any, x: Tensor,
                    y: Tensor | None) -> Callable[[int, Tensor, Tensor], str]:
    """A ``describe`` callback naming the model's sites with non-finite values or gradients."""

    def describe(chain: int, z: Tensor, grad: Tensor) -> str:
        values, grads = potential.view.unravel(z), potential.view.unravel(grad)
        bad_v = [n for n, v in values.items() if not bool(torch.isfinite(v).all())]
        bad_g = [n for n, g in grads.items() if not bool(torch.isfinite(g).all())]
        parts = []
        if bad_v:
            parts.append(f"start values of site(s) {bad_v} are not finite")
        if bad_g:
            parts.append(f"the gradient is not finite at site(s) {bad_g}")
        if hasattr(model, "log_likelihood") and y is not None and not bad_v:
            with torch.no_grad():
                ll = model.log_likelihood(potential.constrain(z), x, y)
            if not bool(torch.isfinite(ll).all()):
                rows = (~torch.isfinite(ll)).nonzero().flatten().tolist()
                parts.append(f"the likelihood (site {OBS!r}) is not finite at data rows {rows[:10]}")
        return "; ".join(parts) or "every site value and gradient is finite, but the log density is not"

    return describe


@renamed_kwargs(value_and_grad="grad_and_value")
def compile_leapfrog_step(grad_and_value: GradAndValue, z: Tensor, inverse_mass_matrix: Tensor) -> StepFn:
    """One leapfrog step (:func:`~inference.integrators.leapfrog_step`), traced once into a
    graph of tensor operations and compiled with ``torch.compile``.

    Tracing (``make_fx``) removes the per-call Python work -- Pyro's distribution objects,
    vmap's dispatch, autograd's bookkeeping -- and Inductor fuses the elementwise work. It is
    valid for log densities without data-dependent Python control flow (true of
    :class:`~bayesnets.bnn.BayesianNet`); shapes are fixed at those of ``z`` and
    ``inverse_mass_matrix``.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    def step(z: Tensor, p: Tensor, grad: Tensor, h: Tensor, imm: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return leapfrog_step(z, p, grad, h, imm, grad_and_value)

    traced = make_fx(step)(z, torch.zeros_like(z), torch.zeros_like(z), z.new_zeros(z.shape[0], 1),
                           inverse_mass_matrix)
    return torch.compile(traced, dynamic=False)  # type: ignore[return-value]


class BatchedHMC(Engine):
    """Many HMC chains as one tensor program, on CPU or GPU.

    All chains advance together as a ``[chains, D]`` tensor: the model's ``log_density`` is
    vectorised over chains with ``torch.func.vmap`` or, for a BayesianNet whose network is an
    MLP, written batched with one matmul per layer (the ``"vmap"`` and ``"mlp"`` paths of
    :func:`inference.density.make_potential`), so one gradient call serves every chain.
    Transitions are static-length HMC with a Metropolis correction (exact for the
    posterior), trajectory lengths jittered uniformly in ``(0, T]`` by a Halton sequence,
    and ``T`` tuned by ChEES (Hoffman, Radul & Sountsov 2021, AISTATS) -- suited to
    batches, because batched NUTS makes every chain wait for the longest tree.

    Per chain (no information crosses chains): the random stream (rows of one generator),
    the start point, the step size (dual averaging, Hoffman & Gelman 2014,
    arXiv:1111.4246), the inverse mass matrix (Stan's windowed Welford estimates), the
    number of leapfrog steps ``ceil(u T / step_size_c)`` and the accept/reject decision.
    Shared: the trajectory length ``T`` and the jitter ``u`` of each iteration (a
    deterministic sequence). ChEES estimates ``T``'s gradient from the spread of all chains
    around their common mean; ``T`` is frozen after warm-up, so the draws kept are
    independent chains each exactly invariant for the posterior.

    Args:
        num_warmup: adaptation iterations (discarded).
        num_samples: draws kept per chain.
        num_chains: chains run together (>= 2 when ``adapt_trajectory_length``).
        target_accept: dual-averaging target of each chain's mean acceptance probability.
        trajectory_length: first (or, without adaptation, the fixed) trajectory length;
            default 1 (one time unit; see ``UNIT_TRAJECTORY_LENGTH``).
        adapt_trajectory_length: tune the trajectory length by ChEES during warm-up.
        jitter: draw each iteration's trajectory length from ``(0, T]``.
        max_num_steps: cap on leapfrog steps per transition.
        step_size: first step size (default: searched from 1 per chain).
        adapt_step_size: dual-averaging adaptation in warm-up.
        dense_mass: adapt a dense (instead of diagonal) inverse mass matrix.
        inverse_mass_matrix: first inverse mass matrix, ``[D]``/``[chains, D]`` or
            ``[D, D]``/``[chains, D, D]`` with ``dense_mass``.
        adapt_mass_matrix: estimate the inverse mass matrix in warm-up.
        init: start point for models: ``"prior"``, ``"module"`` or ``"zeros"``.
        compile: trace the batched gradient once and compile it with ``torch.compile``
            (off by default: the first call compiles for tens of seconds; it pays off on
            long runs of small models, where Python overhead dominates).
        pretrain_steps: Adam steps up each chain's log density before warm-up (:func:`ascend`;
            the pre-training of arXiv 2305.20028); 0 (default) starts warm-up at ``init``.
        pretrain_lr: Adam's learning rate for ``pretrain_steps``.
        seed: base seed; ``None`` draws one from torch's global generator.

    Example:
        >>> post = BatchedHMC(num_chains=16, num_warmup=500, num_samples=500).fit(model, x, y)
        >>> post.predict(x_test).f.shape   # [16, 500, N, 1]
    """

    def __init__(self, num_warmup: int = 500, num_samples: int = 500, num_chains: int = 8,
                 target_accept: float = 0.8, trajectory_length: float | None = None,
                 adapt_trajectory_length: bool = True, jitter: bool = True, max_num_steps: int = 1024,
                 step_size: float | None = None, adapt_step_size: bool = True, dense_mass: bool = False,
                 inverse_mass_matrix: Tensor | None = None, adapt_mass_matrix: bool = True,
                 init: str = "prior", compile: bool = False, pretrain_steps: int = 0, pretrain_lr: float = 1e-2,
                 seed: int | None = None) -> None:
        self.num_warmup, self.num_samples, self.num_chains, self.init = chain_settings(
            num_warmup, num_samples, num_chains, init)
        if adapt_trajectory_length and self.num_chains < 2:
            raise ValueError("num_chains must be >= 2 to adapt the trajectory length (ChEES compares chains); "
                             "for one chain pass adapt_trajectory_length=False and a trajectory_length")
        self.target_accept = _check_target_accept(target_accept)
        self.trajectory_length = None if trajectory_length is None else positive_float(trajectory_length,
                                                                                       "trajectory_length")
        self.adapt_trajectory_length = bool(adapt_trajectory_length)
        self.jitter = bool(jitter)
        self.max_num_steps = check_int(max_num_steps, "max_num_steps")
        self.step_size = None if step_size is None else positive_float(step_size, "step_size")
        self.adapt_step_size = bool(adapt_step_size)
        self.dense_mass = bool(dense_mass)
        self.inverse_mass_matrix = inverse_mass_matrix
        self.adapt_mass_matrix = bool(adapt_mass_matrix)
        self.compile = bool(compile)
        self.pretrain_steps = check_int(pretrain_steps, "pretrain_steps", 0)
        self.pretrain_lr = positive_float(pretrain_lr, "pretrain_lr")
        self.seed = seed

    def fit(self, model: Any, x: Tensor, y: Tensor | None = None, progress: bool = True) -> Posterior:
        """Sample the posterior of ``model`` given ``(x, y)``.

        Args:
            model: a model with ``log_density``, ``init_params``, ``constrain`` and
                ``latent_shapes`` (e.g. :class:`~bayesnets.bnn.BayesianNet`). For a log
                density written directly on ``[chains, D]``, use :meth:`sample`.
            x, y: the data.
            progress: show a tqdm bar.

        Returns:
            Posterior with constrained draws ``[num_chains, num_samples, ...]`` and per-draw
            stats; ``stats["inverse_mass_matrix"]`` holds each chain's adapted metric and
            ``attrs["trajectory_length"]`` the adapted trajectory length.
        """
        if not has_fast_density(model) or not hasattr(model, "latent_shapes"):
            raise TypeError(
                f"BatchedHMC needs a model with log_density, init_params, constrain and latent_shapes (e.g. "
                f"BayesianNet), got {type(model).__name__}; for a Pyro model without them use NUTS, or pass a "
                "batched log density to BatchedHMC.sample")
        x, y = prepare_data(model, x, y)
        seed0 = base_seed(self.seed)
        # MLP BayesianNets take the batched-matmul path (same density, several times faster),
        # other models the vmapped one; per-chain gradients by vmap, as in 0.1 (same draws).
        potential = make_potential(model, x, y, gradient="vmap")
        with seeded(seed0, x):
            z0 = potential.init(self.num_chains, self.init, float_like(x))
        run, seconds = self._run(potential.bind(x, y), z0, seed0, progress, _describe_sites(potential, model, x, y))
        return self._posterior(run, potential.constrain(run.draws), model, (x, y), seed0, seconds)

    def sample(self, log_density: Callable[[Tensor], Tensor], init: Tensor, progress: bool = True,
               view: FlatView | None = None) -> Posterior:
        """Sample a log density written for a batch of chains.

        Args:
            log_density: ``fn(z [chains, D]) -> [chains]``, each row's log density depending
                only on that row (its gradient is taken by one backward pass of the sum).
            init: start points ``[num_chains, D]``.
            progress: show a tqdm bar.
            view: names for the coordinates (draws are then split into sites); default one
                site ``"z"`` of shape ``[D]``.

        Returns:
            Posterior with draws ``[num_chains, num_samples, ...]`` (no constraining transform).
        """
        if not callable(log_density):
            raise TypeError(f"log_density must be callable, got {type(log_density).__name__}")
        if not isinstance(init, Tensor) or init.dim() != 2 or init.shape[0] != self.num_chains:
            got = list(init.shape) if isinstance(init, Tensor) else type(init).__name__
            raise ValueError(f"init must be a tensor of shape [num_chains={self.num_chains}, D], got {got}")
        if view is not None and view.size != init.shape[1]:
            raise ValueError(f"view describes D={view.size} coordinates but init has D={init.shape[1]}")
        seed0 = base_seed(self.seed)
        grad_and_value = autograd_grad_and_value(log_density)
        describe = None
        if view is not None:
            def describe(chain: int, z: Tensor, grad: Tensor) -> str:
                bad = [n for n, v in view.unravel(torch.stack([z, grad])).items() if not bool(torch.isfinite(v).all())]
                return f"non-finite value or gradient at site(s) {bad}" if bad else _describe_flat(z, grad)
        run, seconds = self._run(grad_and_value, init, seed0, progress, describe)
        samples = view.unravel(run.draws) if view is not None else {"z": run.draws}
        return self._posterior(run, samples, None, None, seed0, seconds)

    def _run(self, grad_and_value: GradAndValue, z0: Tensor, seed: int, progress: bool,
             describe: Callable[[int, Tensor, Tensor], str] | None) -> tuple[HMCRun, float]:
        generator = torch.Generator(device=z0.device)
        generator.manual_seed(seed)
        start = time.perf_counter()
        if self.pretrain_steps:
            z0 = ascend(grad_and_value, z0, self.pretrain_steps, self.pretrain_lr)
        run = run_batched_hmc(
            grad_and_value, z0, num_warmup=self.num_warmup, num_samples=self.num_samples,
            target_accept=self.target_accept, step_size=self.step_size, adapt_step_size=self.adapt_step_size,
            trajectory_length=self.trajectory_length, adapt_trajectory_length=self.adapt_trajectory_length,
            inverse_mass_matrix=self.inverse_mass_matrix, dense_mass=self.dense_mass,
            adapt_mass_matrix=self.adapt_mass_matrix, max_num_steps=self.max_num_steps, jitter=self.jitter,
            compile=self.compile, generator=generator, progress=progress, describe=describe)
        return run, time.perf_counter() - start

    def _posterior(self, run: HMCRun, samples: dict[str, Tensor], model: Any,
                   data: tuple[Tensor, Tensor | None] | None, seed: int, seconds: float) -> Posterior:
        stats = {**run.stats, "inverse_mass_matrix": run.inverse_mass_matrix}
        attrs = {"engine": type(self).__name__, **self.settings(), "seed": seed, "seconds": seconds,
                 "trajectory_length": run.trajectory_length}
        posterior = Posterior(samples, stats, model=model, data=data, attrs=attrs)
        n_div = int(run.stats["diverging"].sum())
        if n_div:
            warnings.warn(divergence_message(n_div, self.num_chains * self.num_samples, self.target_accept),
                          RuntimeWarning, stacklevel=3)
        return posterior
