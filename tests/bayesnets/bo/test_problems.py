"""The BO test problems: dimensions, bounds and optima (maximisation form), validation and the registry."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bayesnets.bo.problems import PROBLEMS, BNNDraw, PolyDraw, get_problem

# name -> (dim, objectives, lower bound, upper bound, known optimum or max hypervolume)
EXPECTED = {
    "branin": (2, 1, [-5.0, 0.0], [10.0, 15.0], 0.397887),  # optimum is the negated minimum
    "hartmann6": (6, 1, [0.0] * 6, [1.0] * 6, 3.32237),
    "ackley10": (10, 1, [-32.768] * 10, [32.768] * 10, 0.0),
    "branincurrin": (2, 2, [0.0, 0.0], [1.0, 1.0], 59.36011874867746),
    "dtlz2": (6, 2, [0.0] * 6, [1.0] * 6, 1.1**2 - math.pi / 4),  # box to the ref point minus the quarter disc
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_botorch_problems_have_the_papers_dims_bounds_and_optima(name: str, tkwargs: dict) -> None:
    dim, m, lower, upper, best = EXPECTED[name]
    p = get_problem(name).to(**tkwargs)
    assert (p.dim, p.num_objectives) == (dim, m)
    torch.testing.assert_close(p.bounds, torch.tensor([lower, upper], **tkwargs))
    if m == 1:
        sign = -1.0 if name == "branin" else 1.0
        assert p.optimal_value == pytest.approx(sign * best, abs=1e-6) and p.max_hv is None
        # The optimum is attained at BoTorch's optimisers and beats random points.
        F_opt = p.evaluate_true(p.function.optimizers.to(**tkwargs))
        torch.testing.assert_close(F_opt, torch.full_like(F_opt, p.optimal_value), atol=1e-4, rtol=0)
        X = p.bounds[0] + (p.bounds[1] - p.bounds[0]) * torch.rand(256, dim, **tkwargs)
        assert bool((p.evaluate_true(X) <= p.optimal_value + 1e-6).all())
        assert p.regret(p.optimal_value) == 0.0
    else:
        assert p.optimal_value is None and p.max_hv == pytest.approx(best, rel=1e-6)
        assert p.ref_point.shape == (m,)
        # A set of points scores a hypervolume between 0 and the maximum.
        X = p.bounds[0] + (p.bounds[1] - p.bounds[0]) * torch.rand(64, dim, **tkwargs)
        assert 0.0 <= p.score(p.evaluate_true(X)) < p.max_hv


def test_poly_optimum_is_exact(tkwargs: dict) -> None:
    # dim 8: two groups of four, small enough to enumerate all 256 corners (the maximum of a
    # multilinear function over a box is at a corner) and to see random points stay below it.
    f = PolyDraw(8, seed=3).to(**tkwargs)
    corners = torch.tensor(list(itertools.product((0.0, 1.0), repeat=8)), **tkwargs)
    assert float(f.evaluate_true(corners).max()) == pytest.approx(f.optimal_value, abs=1e-12)
    assert float(f.evaluate_true(f.optimizers)) == pytest.approx(f.optimal_value, abs=1e-12)
    assert float(f.evaluate_true(torch.rand(4096, 8, **tkwargs)).max()) < f.optimal_value
    # The paper's definition: Σ_j Π_k (x_{j + 2k} - c_{j + 2k}) for d = 8.
    x = torch.rand(3, 8, **tkwargs)
    c = f.c.to(**tkwargs)
    manual = sum(math.prod((x[:, j + 2 * k] - c[j + 2 * k]) for k in range(4)) for j in range(2))
    torch.testing.assert_close(f.evaluate_true(x), manual)
    p = get_problem("poly")
    assert (p.dim, p.paper.num_init) == (200, 100) and p.optimal_value == pytest.approx(
        float(p.evaluate_true(p.function.optimizers)), abs=1e-9)


def test_bnn_draw_is_a_seeded_tanh_network(tkwargs: dict) -> None:
    f = BNNDraw(5, seed=1, hidden=(7,)).to(**tkwargs)
    x = torch.rand(4, 5, **tkwargs)
    manual = torch.tanh(x @ f.weight0 + f.bias0) @ f.weight1 + f.bias1
    torch.testing.assert_close(f.evaluate_true(x), manual.squeeze(-1))
    torch.testing.assert_close(BNNDraw(5, seed=1, hidden=(7,)).weight0.to(**tkwargs), f.weight0)  # reproducible
    assert not torch.equal(BNNDraw(5, seed=2, hidden=(7,)).weight0.to(**tkwargs), f.weight0)
    p = get_problem("bnndraw")
    assert (p.dim, p.optimal_value, p.paper.num_init) == (400, None, 100)


def test_noise_is_added_only_when_asked(tkwargs: dict) -> None:
    p = get_problem("hartmann6", noise_std=0.5).to(**tkwargs)
    X = torch.rand(200, 6, **tkwargs)
    resid = p(X) - p.evaluate_true(X)
    # The sample std of 200 N(0, 0.25) draws is within 0.5 * (1 ± 0.2) except with probability ~6e-5
    # (a 4-sigma band: the estimate's relative standard error is 1/sqrt(2 * 199)).
    assert 0.4 < float(resid.std()) < 0.6
    assert p.noise_std == 0.5


def test_unknown_problem_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown problem 'rosenbrock'") as err:
        get_problem("rosenbrock")
    assert all(name in str(err.value) for name in PROBLEMS)


@pytest.mark.parametrize(("kwargs", "message"), [({"dim": 6}, "multiple of 4"), ({"dim": 0}, "multiple of 4")])
def test_poly_rejects_bad_dims(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_problem("poly", **kwargs)


def test_dtlz2_rejects_too_many_objectives() -> None:
    with pytest.raises(ValueError, match="num_objectives"):
        get_problem("dtlz2", dim=3, num_objectives=3)


def test_queries_outside_the_bounds_or_of_the_wrong_shape_are_rejected(tkwargs: dict) -> None:
    p = get_problem("branin").to(**tkwargs)
    with pytest.raises(ValueError, match=r"X\[1, 0\] = 11 is outside the bounds \[-5, 10\]"):
        p(torch.tensor([[0.0, 1.0], [11.0, 1.0]], **tkwargs))
    with pytest.raises(ValueError, match=r"shape \[n, 2\]"):
        p(torch.zeros(3, **tkwargs))
    with pytest.raises(ValueError, match=r"shape \[n, 2\]"):
        p(torch.zeros(2, 3, 2, **tkwargs))
    with pytest.raises(ValueError, match="NaN"):
        p(torch.tensor([[math.nan, 1.0]], **tkwargs))
    with pytest.raises(TypeError, match="floating-point"):
        p(torch.zeros(1, 2, dtype=torch.long))
