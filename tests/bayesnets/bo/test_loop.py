"""The BO loop: short runs with every registered surrogate improve on the initial design; NaN objective
values are reported, skipped by the surrogate and kept; bad settings fail with clear errors."""

from __future__ import annotations

import warnings
from typing import ClassVar

import pytest
import torch
from botorch.test_functions import Branin
from botorch.test_functions.synthetic import SyntheticTestFunction
from botorch.utils.sampling import draw_sobol_samples

from bayesnets.bo.loop import run_bo
from bayesnets.bo.problems import PAPER_BRANIN, Problem, get_problem
from bayesnets.surrogates import SURROGATES, make_surrogate

# Test-sized settings for the surrogates whose default fits take several seconds each on a 2-core CPU
# (the defaults are the surrogates' own business, tested in tests/bayesnets/surrogates/); the run
# below checks the loop works with each of them, not how well a short chain explores.
FAST = {
    "hmc": {"engine_options": {"num_warmup": 50, "num_samples": 16}},
    "nuts": {"engine_options": {"num_warmup": 30, "num_samples": 30, "max_tree_depth": 4}},
    "sghmc": {"engine_options": {"num_warmup": 300, "num_samples": 16, "thinning": 10}},
    "svi": {"engine_options": {"num_steps": 300, "num_samples": 32}},
    "ensemble": {"engine_options": {"num_members": 5, "num_epochs": 200}},
}
ITERATIONS = 3


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_three_iterations_with_every_surrogate(surrogate: str, tkwargs: dict) -> None:
    problem = get_problem("branin").to(**tkwargs)
    seed = 0
    rec = run_bo(problem, surrogate, ITERATIONS, seed=seed, progress=False, surrogate_options=FAST.get(surrogate))
    n0 = PAPER_BRANIN.num_init
    assert rec.X.shape == (n0 + ITERATIONS, 2) and rec.Y.shape == rec.F.shape == (n0 + ITERATIONS, 1)
    assert rec.iteration == [0] * n0 + list(range(1, ITERATIONS + 1))
    # The initial design is the seeded Sobol design, shared by every surrogate run with this seed.
    sobol = draw_sobol_samples(bounds=problem.bounds, n=n0, q=1, seed=seed).squeeze(-2)
    torch.testing.assert_close(rec.X[:n0], sobol.cpu())
    problem.check_X(rec.X.to(**tkwargs))  # every proposal inside the bounds
    assert rec.best[0] == pytest.approx(float(rec.F[:n0].max()))
    # Never loses the initial design's best (by construction: the best so far is kept); the proposals are
    # new points, not repeats of the design. Whether three iterations from 10 points already *improve* is
    # the surrogate's quality, not the loop's (at this seed only gp and pfn did; the initial best -3.545 is
    # beaten by 5.9 % of the domain): the strict checks are the two tests below.
    assert rec.best == sorted(rec.best) and len(rec.fit_time) == len(rec.acq_time) == ITERATIONS
    assert rec.regret == pytest.approx([problem.optimal_value - b for b in rec.best])
    assert rec.settings["surrogate_options"] == FAST.get(surrogate, {})  # recorded, JSON-ready
    assert torch.cdist(rec.X[n0:], rec.X[:n0]).min() > 1e-6


def test_gp_strictly_improves_on_a_good_initial_design(tkwargs: dict) -> None:
    # Branin, 10 Sobol points, seed 7: the initial best is -2.088, and only 3.2 % of the domain does
    # better (measured on 10^6 uniform points), so three random proposals would improve on it with
    # probability 1 - 0.968^3 = 9 %. A strict improvement within three iterations needs a surrogate and
    # an acquisition that point the search at the optima; a loop that ignored its proposals, mis-scaled
    # the inputs or never refitted would fail. (The GP improves within 3 iterations on 6 of seeds 0-7.)
    problem = get_problem("branin").to(**tkwargs)
    rec = run_bo(problem, "gp", ITERATIONS, seed=7, progress=False)
    assert rec.best[0] == pytest.approx(-2.0876, abs=1e-3)
    assert rec.best[-1] > rec.best[0] + 1e-6, f"no improvement on the initial design: {rec.best}"
    assert rec.metric == "simple regret"


class _Bowl(SyntheticTestFunction):
    """-||x - c||² on the unit square with c = (0.65, 0.3): smooth, one interior optimum."""

    dim = 2
    continuous_inds: ClassVar[list[int]] = [0, 1]
    _optimal_value = 0.0
    _optimizers: ClassVar[list[tuple[float, float]]] = [(0.65, 0.3)]

    def __init__(self) -> None:
        super().__init__(bounds=[(0.0, 1.0), (0.0, 1.0)])

    def _evaluate_true(self, X: torch.Tensor) -> torch.Tensor:
        return -(X - torch.tensor([0.65, 0.3]).to(X)).square().sum(-1)


@pytest.mark.parametrize("surrogate", ["gp", "gp_legacy", "ibnn", "dkl", "tprocess"])
def test_gp_based_surrogates_improve_on_a_good_design(surrogate: str, tkwargs: dict) -> None:
    # Five Sobol points (seed 6) whose best lies 0.045 from the optimum: only 0.63 % of the square beats
    # it, so 3 iterations of 4 random proposals would improve with probability 1 - 0.9937^12 = 7 %. The
    # GP-based surrogates model the bowl and do (regret ratios measured: gp 0.035, gp_legacy 0.004,
    # ibnn 0.81, dkl 0.41, tprocess 0.043). The network surrogates (hmc, nuts, sghmc, svi, ensemble)
    # and the PFN did not at this seed: from five points they extrapolate trends and spend the 12
    # proposals near the edges; docs/bo.md lists how often each improved over 8 seeds.
    problem = Problem("bowl", _Bowl(), paper=PAPER_BRANIN, optimal_value=0.0).to(**tkwargs)
    rec = run_bo(problem, surrogate, ITERATIONS, batch_size=4, seed=6, num_init=5, progress=False)
    assert rec.regret[0] == pytest.approx(0.00200, abs=5e-5)
    assert rec.best[-1] > rec.best[0] + 1e-9, f"no improvement on the initial design: {rec.best}"


@pytest.mark.parametrize("surrogate", ["hmc", "nuts", "sghmc", "svi", "ensemble", "pfn"])
def test_other_surrogates_improve_on_a_middling_design(surrogate: str, tkwargs: dict) -> None:
    # The same bowl at seed 7: the initial best lies 0.18 from the optimum and 10.6 % of the square beats
    # it, so 12 random proposals would improve with probability 74 %. Each surrogate here did (final /
    # initial regret measured: hmc 0.042, nuts 0.19, sghmc 0.65, svi 0.19, ensemble 0.78, pfn 0.067).
    # This catches what makes proposals systematically bad -- a flipped sign, inputs scaled wrongly, a
    # posterior that ignores its data and proposes the corners -- not that these surrogates search
    # better than random from five points: docs/bo.md shows they do not (they improve in 4-6 of 8 seeds,
    # where random proposals would in 4.85 on average).
    problem = Problem("bowl", _Bowl(), paper=PAPER_BRANIN, optimal_value=0.0).to(**tkwargs)
    options = None if surrogate == "hmc" else FAST.get(surrogate)  # HMC's defaults are test-sized already
    rec = run_bo(problem, surrogate, ITERATIONS, batch_size=4, seed=7, num_init=5, progress=False,
                 surrogate_options=options)
    assert rec.regret[0] == pytest.approx(0.0337, abs=5e-4)
    assert rec.best[-1] > rec.best[0] + 1e-9, f"no improvement on the initial design: {rec.best}"


class _HalfBranin(Branin):
    """Branin whose evaluations fail (NaN) for x0 > 5: a third of the domain, including one optimum."""

    def _evaluate_true(self, X: torch.Tensor) -> torch.Tensor:
        f = super()._evaluate_true(X)
        return torch.where(X[..., 0] > 5.0, torch.full_like(f, float("nan")), f)


def test_nan_values_are_reported_skipped_and_kept(tkwargs: dict) -> None:
    problem = Problem("half_branin", _HalfBranin(negate=True), paper=PAPER_BRANIN,
                      optimal_value=-0.397887).to(**tkwargs)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy_gp(train_X: torch.Tensor, train_Y: torch.Tensor, *, seed: int):
        seen.append((train_X.clone(), train_Y.clone()))
        return make_surrogate("gp", train_X, train_Y, seed=seed)

    with pytest.warns(RuntimeWarning, match=r"objective values from the initial design are NaN"):
        rec = run_bo(problem, spy_gp, 2, seed=0, num_init=12, progress=False)
    nan_rows = torch.isnan(rec.Y[:, 0])
    assert int(nan_rows[:12].sum()) >= 2, "the Sobol design should hit the failing third of the domain"
    assert rec.num_nan == int(nan_rows.sum()) and rec.X.shape == (14, 2)  # NaN rows kept in the record
    assert rec.surrogate == "spy_gp"
    # Each fit saw exactly the finite rows so far, in order (no earlier data lost), scaled to the unit cube.
    lower, upper = problem.bounds.cpu()
    for it, (train_X, train_Y) in enumerate(seen):
        rows = 12 + it
        ok = ~nan_rows[:rows]
        torch.testing.assert_close(train_X.cpu(), (rec.X[:rows][ok] - lower) / (upper - lower))
        torch.testing.assert_close(train_Y.cpu(), rec.Y[:rows][ok])
    assert rec.best[0] == pytest.approx(float(rec.F[:12][~nan_rows[:12]].max()))


def test_fit_warnings_are_collected_and_summarised_once(tkwargs: dict) -> None:
    # An MCMC surrogate may warn (divergences) at every iteration: the loop keeps every message in the
    # record, per iteration, and warns once per run with a count and the most frequent kind.
    calls = []

    def noisy_gp(train_X: torch.Tensor, train_Y: torch.Tensor, *, seed: int):
        calls.append(seed)
        if len(calls) != 2:
            warnings.warn(f"{len(calls)} of 80 draws after warm-up ended in a divergent transition", RuntimeWarning,
                          stacklevel=2)
        return make_surrogate("gp", train_X, train_Y, seed=seed)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = run_bo(get_problem("branin").to(**tkwargs), noisy_gp, 3, seed=0, num_init=5, progress=False)
    mine = [str(w.message) for w in caught if "divergent" in str(w.message)]
    assert len(mine) == 1, mine
    assert "warned in 2 of 3 iterations (2 warnings" in mine[0] and "Most frequent (2x)" in mine[0]
    assert rec.fit_warnings == [["RuntimeWarning: 1 of 80 draws after warm-up ended in a divergent transition"], [],
                                ["RuntimeWarning: 3 of 80 draws after warm-up ended in a divergent transition"]]


def test_all_nan_objective_is_an_error(tkwargs: dict) -> None:
    problem = Problem("half_branin", _HalfBranin(negate=True), paper=PAPER_BRANIN).to(**tkwargs)
    far_side = torch.tensor([[6.0, 1.0], [8.0, 2.0]], **tkwargs)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="every objective value so far"):
        run_bo(problem, "gp", 1, init_X=far_side, progress=False)


def test_user_initial_design_is_validated(tkwargs: dict) -> None:
    problem = get_problem("branin").to(**tkwargs)
    with pytest.raises(ValueError, match=r"init_X\[0, 1\] = 16 is outside the bounds \[0, 15\]"):
        run_bo(problem, "gp", 1, init_X=torch.tensor([[0.0, 16.0]], **tkwargs), progress=False)
    with pytest.raises(ValueError, match=r"init_X must have shape \[n, 2\]"):
        run_bo(problem, "gp", 1, init_X=torch.zeros(1, 3, 2, **tkwargs), progress=False)
    with pytest.raises(ValueError, match=r"init_X must have shape \[n, 2\]"):
        run_bo(problem, "gp", 1, init_X=torch.zeros(4, 3, **tkwargs), progress=False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"iterations": -1}, "iterations must be an integer >= 0"),
    ({"num_init": 0}, "num_init must be an integer >= 1"),
    ({"acquisition": "qlogehvi"}, "valid: qlogei, qlognei, qucb"),
    ({"surrogate": "kriging"}, "unknown surrogate 'kriging'; valid names: gp"),
    ({"problem": "rosenbrock"}, "unknown problem 'rosenbrock'"),
])
def test_bad_settings_are_rejected(kwargs: dict, message: str) -> None:
    args = {"problem": "branin", "surrogate": "gp", "iterations": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        run_bo(args.pop("problem"), args.pop("surrogate"), args.pop("iterations"), progress=False, **args)


@pytest.mark.parametrize("acquisition", ["qlognei", "qucb"])
def test_batches_with_other_acquisitions(acquisition: str, tkwargs: dict) -> None:
    problem = get_problem("branin").to(**tkwargs)
    rec = run_bo(problem, "gp", 1, batch_size=3, seed=1, acquisition=acquisition, num_init=6, progress=False)
    assert rec.X.shape == (9, 2) and rec.iteration == [0] * 6 + [1] * 3
    assert rec.X[6:].unique(dim=0).shape[0] == 3  # a batch of three distinct points
    problem.check_X(rec.X.to(**tkwargs))
    assert rec.settings["acquisition"] == acquisition and rec.settings["batch_size"] == 3


def test_multi_objective_records_hypervolume_regret(tkwargs: dict) -> None:
    problem = get_problem("branincurrin").to(**tkwargs)
    with pytest.raises(ValueError, match="valid: qlogehvi, qlognehvi"):
        run_bo(problem, "gp", 1, acquisition="qlogei", progress=False)
    rec = run_bo(problem, "gp", 2, batch_size=2, seed=0, num_restarts=2, raw_samples=16, mc_samples=32,
                 progress=False)
    assert rec.Y.shape == (14, 2) and rec.settings["acquisition"] == "qlogehvi"
    assert rec.metric == "hypervolume regret"
    assert rec.best == sorted(rec.best) and rec.best[-1] == pytest.approx(problem.score(rec.F.to(**tkwargs)))
    assert rec.regret == pytest.approx([problem.max_hv - b for b in rec.best])
