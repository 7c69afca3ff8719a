"""The Bayesian optimisation loop of Li, Rudner & Wilson (arXiv 2305.20028, ``main.py`` of yucenli/bnn-bo),
with log-EI acquisition functions and fixed base samples.

Each run: a scrambled Sobol initial design; then, per iteration, the surrogate is refitted from scratch
on every finite observation (inputs scaled to the unit cube), a batch acquisition function is built
(qLogEI / qLogNEI / qUCB for one objective, qLogEHVI / qLogNEHVI for several) and optimised with
BoTorch's ``optimize_acqf`` in the unit cube, and the batch is evaluated. NaN objective values are
reported with a warning, kept in the record and left out of the surrogate's training data.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from botorch.acquisition import (
    AcquisitionFunction,
    qLogExpectedImprovement,
    qLogNoisyExpectedImprovement,
    qUpperConfidenceBound,
)
from botorch.acquisition.multi_objective.logei import (
    qLogExpectedHypervolumeImprovement,
    qLogNoisyExpectedHypervolumeImprovement,
)
from botorch.models.model import Model
from botorch.optim import optimize_acqf
from botorch.sampling.get_sampler import get_sampler
from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning
from botorch.utils.sampling import draw_sobol_samples
from botorch.utils.transforms import normalize, unnormalize
from torch import Tensor
from tqdm.auto import tqdm

from bayesnets.bo.problems import Problem, get_problem
from bayesnets.bo.record import BORecord
from inference.checks import check_int
from inference.seeding import seeded

__all__ = ["ACQUISITIONS", "build_acquisition", "run_bo"]

#: Acquisition names: single-objective ones, then the multi-objective ones.
SINGLE_OBJECTIVE = ("qlogei", "qlognei", "qucb")
MULTI_OBJECTIVE = ("qlogehvi", "qlognehvi")
ACQUISITIONS = SINGLE_OBJECTIVE + MULTI_OBJECTIVE
#: Monte Carlo samples per acquisition value; the paper's ``StochasticSampler(128)``. Here they are fixed
#: base samples (QMC normal for Gaussian posteriors, fixed member indices for ensemble posteriors), so the
#: acquisition surface is deterministic and L-BFGS-B sees a smooth function.
MC_SAMPLES = 128
#: Acquisition optimisation budget: multi-start L-BFGS-B from the best of ``RAW_SAMPLES`` random points.
#: Larger than the paper's (2 restarts, 16 raw samples, 10 iterations), still seconds on a laptop CPU.
NUM_RESTARTS = 4
RAW_SAMPLES = 64
MAXITER = 50
#: qUCB's exploration weight; the value of BoTorch's qUCB examples.
UCB_BETA = 0.2
#: Seeds of successive iterations' surrogate fits and samplers are ``seed * SEED_STRIDE + iteration``.
SEED_STRIDE = 100_003

SurrogateFactory = Callable[..., Model]


def build_acquisition(name: str, model: Model, train_X: Tensor, train_Y: Tensor, *,
                      ref_point: Tensor | None = None, mc_samples: int = MC_SAMPLES,
                      seed: int | None = None) -> AcquisitionFunction:
    """Build acquisition function ``name`` on a fitted surrogate.

    Args:
        name: one of ``ACQUISITIONS``.
        model: the fitted surrogate.
        train_X: ``[n, d]`` its (unit-cube) training inputs, the baseline for the noisy variants.
        train_Y: ``[n, m]`` its training outcomes: ``best_f`` / the Pareto front for the non-noisy variants.
        ref_point: ``[m]`` hypervolume reference point (multi-objective only).
        mc_samples: Monte Carlo samples; the sampler is BoTorch's ``get_sampler`` choice for the
            surrogate's posterior (QMC normal base samples, or member indices for ensembles).
        seed: seed of the base samples.

    Raises:
        ValueError: unknown name, or a single-objective acquisition for several objectives (or vice versa).
    """
    multi = train_Y.shape[-1] > 1
    valid = MULTI_OBJECTIVE if multi else SINGLE_OBJECTIVE
    if name not in valid:
        kind = "several objectives" if multi else "one objective"
        raise ValueError(f"acquisition {name!r} does not apply to {kind}; valid: {', '.join(valid)}")
    with torch.no_grad():
        posterior = model.posterior(train_X[:1])
    sampler = get_sampler(posterior, sample_shape=torch.Size([mc_samples]), seed=seed)
    if name == "qlogei":
        return qLogExpectedImprovement(model, best_f=train_Y.max(), sampler=sampler)
    if name == "qlognei":
        return qLogNoisyExpectedImprovement(model, X_baseline=train_X, sampler=sampler, prune_baseline=True)
    if name == "qucb":
        return qUpperConfidenceBound(model, beta=UCB_BETA, sampler=sampler)
    if ref_point is None:
        raise ValueError(f"acquisition {name!r} needs ref_point ([m] hypervolume reference point)")
    ref = ref_point.to(train_Y)
    if name == "qlogehvi":
        partitioning = FastNondominatedPartitioning(ref_point=ref, Y=train_Y)
        return qLogExpectedHypervolumeImprovement(model, ref_point=ref, partitioning=partitioning, sampler=sampler)
    return qLogNoisyExpectedHypervolumeImprovement(model, ref_point=ref, X_baseline=train_X, sampler=sampler,
                                                   prune_baseline=True)


def _surrogate_factory(surrogate: str | SurrogateFactory) -> tuple[str, SurrogateFactory]:
    if callable(surrogate):
        return getattr(surrogate, "__name__", type(surrogate).__name__), surrogate
    from bayesnets.surrogates import SURROGATES, make_surrogate

    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; valid names: {', '.join(SURROGATES)}")
    return surrogate, lambda train_X, train_Y, **kw: make_surrogate(surrogate, train_X, train_Y, **kw)


def _jsonable(value: Any) -> Any:
    """``value`` if JSON can hold it (numbers, strings, nested lists/dicts of them), else its ``repr``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _warn_nan(Y: Tensor, first_row: int, iteration: int) -> None:
    bad = (~torch.isfinite(Y).all(-1)).nonzero().flatten()
    if bad.numel():
        where = "the initial design" if iteration == 0 else f"iteration {iteration}"
        warnings.warn(f"{bad.numel()} of {Y.shape[0]} objective values from {where} are NaN or infinite "
                      f"(rows {[first_row + int(i) for i in bad]}); they stay in the record and are left out "
                      "of the surrogate's training data", RuntimeWarning, stacklevel=3)


def _summarise_fit_warnings(per_iteration: list[list[str]], run: str) -> None:
    """One warning for a run's surrogate fits (an MCMC surrogate may warn at every iteration), naming how
    many iterations warned and the most frequent message."""
    messages = [m for ms in per_iteration for m in ms]
    if not messages:
        return
    # group messages that differ only in their numbers ("3 of 80 draws", "5 of 80 draws")
    kinds = [re.sub(r"\d+(\.\d+)?", "#", m) for m in messages]
    common = max(set(kinds), key=kinds.count)
    warned = sum(1 for ms in per_iteration if ms)
    warnings.warn(f"{run}: the surrogate fit warned in {warned} of {len(per_iteration)} iterations "
                  f"({len(messages)} warnings; every one is in BORecord.fit_warnings). Most frequent "
                  f"({kinds.count(common)}x), e.g.: {messages[kinds.index(common)]}", RuntimeWarning, stacklevel=3)


def run_bo(problem: Problem | str, surrogate: str | SurrogateFactory, iterations: int, *, batch_size: int = 1,
           num_init: int | None = None, seed: int = 0, acquisition: str | None = None, init_X: Tensor | None = None,
           num_restarts: int = NUM_RESTARTS, raw_samples: int = RAW_SAMPLES, maxiter: int = MAXITER,
           mc_samples: int = MC_SAMPLES, surrogate_options: dict[str, Any] | None = None,
           progress: bool = True) -> BORecord:
    """Run Bayesian optimisation (maximisation) of ``problem`` with ``surrogate``.

    Args:
        problem: a :class:`Problem` or a name from ``PROBLEMS``. Its bounds' device and dtype are used throughout.
        surrogate: a name from ``bayesnets.surrogates.SURROGATES``, or a factory
            ``f(train_X [n, d] in the unit cube, train_Y [n, m], *, seed) -> fitted Model``.
        iterations: BO iterations after the initial design (0 evaluates the initial design only).
        batch_size: candidates per iteration (``q``).
        num_init: size of the Sobol initial design; default the paper's for the problem
            (``problem.paper.num_init``: 10 for the synthetic problems, 100 for the high-dimensional ones).
        seed: seeds the initial design, the surrogate fits, the base samples, the acquisition restarts and
            the observation noise. Runs with the same seed share the initial design.
        acquisition: one of ``ACQUISITIONS``; default ``"qlogei"`` for one objective and ``"qlogehvi"``
            for several (the paper's qEI / qEHVI, in their numerically robust log forms).
        init_X: ``[n, d]`` a user-chosen initial design inside the bounds (replaces the Sobol one).
        num_restarts, raw_samples, maxiter: ``optimize_acqf`` budget (L-BFGS-B restarts, raw samples for
            picking them, iterations per restart).
        mc_samples: Monte Carlo samples of the acquisition function.
        surrogate_options: extra keyword arguments for the surrogate factory.
        progress: show a tqdm bar over the iterations.

    Returns:
        The run's :class:`BORecord`.

    Raises:
        ValueError: bad settings, ``init_X`` of the wrong shape or outside the bounds, an unknown problem,
            surrogate or acquisition, or no finite objective value to fit a surrogate to.
    """
    if isinstance(problem, str):
        problem = get_problem(problem)
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a Problem or a problem name, got {type(problem).__name__}")
    iterations, batch_size = check_int(iterations, "iterations", 0), check_int(batch_size, "batch_size")
    num_restarts, raw_samples, maxiter, mc_samples = (
        check_int(value, name) for name, value in (("num_restarts", num_restarts), ("raw_samples", raw_samples),
                                                   ("maxiter", maxiter), ("mc_samples", mc_samples)))
    multi = problem.is_multi_objective
    acquisition = acquisition or ("qlogehvi" if multi else "qlogei")
    valid = MULTI_OBJECTIVE if multi else SINGLE_OBJECTIVE
    if acquisition not in valid:
        raise ValueError(f"acquisition {acquisition!r} is not valid for problem {problem.name!r} "
                         f"({problem.num_objectives} objective(s)); valid: {', '.join(valid)}")
    surrogate_name, factory = _surrogate_factory(surrogate)
    options = dict(surrogate_options or {})
    bounds = problem.bounds
    if init_X is not None:
        problem.check_X(init_X, "init_X")
        if init_X.shape[0] == 0:
            raise ValueError("init_X must hold at least one point, got shape [0, d]")
        num_init = init_X.shape[0]
    else:
        num_init = problem.paper.num_init if num_init is None else num_init
        num_init = check_int(num_init, "num_init")
    unit = torch.zeros_like(bounds)
    unit[1] = 1.0

    with seeded(seed, bounds):
        X = (init_X.to(bounds) if init_X is not None
             else draw_sobol_samples(bounds=bounds, n=num_init, q=1, seed=seed).squeeze(-2))
        Y, F = problem(X), problem.evaluate_true(X)
        _warn_nan(Y, 0, 0)
        rows = [0] * X.shape[0]
        best = [problem.score(F[torch.isfinite(Y).all(-1)])]
        fit_time: list[float] = []
        acq_time: list[float] = []
        fit_warnings: list[list[str]] = []
        bar = tqdm(range(1, iterations + 1), desc=f"{problem.name} {surrogate_name} seed {seed}",
                   disable=not progress)
        for it in bar:
            ok = torch.isfinite(Y).all(-1)
            if not bool(ok.any()):
                raise ValueError(f"every objective value so far ({Y.shape[0]}) is NaN: nothing to fit a surrogate to")
            train_X, train_Y = normalize(X[ok], bounds), Y[ok]
            step_seed = seed * SEED_STRIDE + it
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = factory(train_X, train_Y, seed=step_seed, **options)
            fitted = time.perf_counter()
            fit_warnings.append([f"{w.category.__name__}: {w.message}" for w in caught])
            acqf = build_acquisition(acquisition, model, train_X, train_Y, ref_point=problem.ref_point,
                                     mc_samples=mc_samples, seed=step_seed)
            candidates, _ = optimize_acqf(acqf, unit, q=batch_size, num_restarts=num_restarts,
                                          raw_samples=raw_samples, options={"maxiter": maxiter})
            acq_time.append(time.perf_counter() - fitted)
            fit_time.append(fitted - start)
            # L-BFGS-B keeps candidates in [0, 1]; the clamp only removes rounding error of unnormalize.
            X_new = unnormalize(candidates.detach(), bounds).clamp(bounds[0], bounds[1])
            Y_new, F_new = problem(X_new), problem.evaluate_true(X_new)
            _warn_nan(Y_new, X.shape[0], it)
            X, Y, F = torch.cat([X, X_new]), torch.cat([Y, Y_new]), torch.cat([F, F_new])
            rows += [it] * X_new.shape[0]
            best.append(problem.score(F[torch.isfinite(Y).all(-1)]))
            bar.set_postfix(best=f"{best[-1]:.4g}")
        bar.close()
    _summarise_fit_warnings(fit_warnings, f"{surrogate_name} on {problem.name} (seed {seed})")

    known = problem.max_hv if multi else problem.optimal_value
    regret = None if known is None else [problem.regret(b) for b in best]
    settings = {"iterations": iterations, "batch_size": batch_size, "num_init": num_init,
                "acquisition": acquisition, "num_restarts": num_restarts, "raw_samples": raw_samples,
                "maxiter": maxiter, "mc_samples": mc_samples, "noise_std": problem.noise_std,
                "optimal_value": problem.optimal_value, "max_hv": problem.max_hv,
                "surrogate_options": {k: _jsonable(v) for k, v in options.items()},
                "user_init_X": init_X is not None}
    return BORecord(problem=problem.name, surrogate=surrogate_name, seed=seed, X=X.cpu(), Y=Y.cpu(), F=F.cpu(),
                    iteration=rows, best=best, regret=regret, fit_time=fit_time, acq_time=acq_time,
                    settings=settings, fit_warnings=fit_warnings)
