"""Bayesian optimisation with BNN surrogates: test problems, the BO loop, results records and regret
plots (Li, Rudner & Wilson, "A Study of Bayesian Neural Network Surrogates for Bayesian Optimization",
arXiv 2305.20028).

``run_bo(get_problem("branin"), "gp", iterations=8)`` returns a :class:`BORecord`;
``plot_regret(records)`` draws mean ± standard error over seeds, one line per surrogate.
"""

from bayesnets.bo.loop import ACQUISITIONS, build_acquisition, run_bo
from bayesnets.bo.plot import plot_regret
from bayesnets.bo.problems import PROBLEMS, BNNDraw, PaperSettings, PolyDraw, Problem, get_problem
from bayesnets.bo.record import Aggregate, BORecord, aggregate, load_records, save_records

__all__ = [
    "ACQUISITIONS",
    "PROBLEMS",
    "Aggregate",
    "BNNDraw",
    "BORecord",
    "PaperSettings",
    "PolyDraw",
    "Problem",
    "aggregate",
    "build_acquisition",
    "get_problem",
    "load_records",
    "plot_regret",
    "run_bo",
    "save_records",
]
