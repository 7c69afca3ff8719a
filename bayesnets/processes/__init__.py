"""Neural processes: CNP, NP, ANP and the martingale posterior NP (P40, arXiv 2304.09431).

``model.predict(context_x, context_y, target_x)`` returns an :class:`NPPredictive` (mean, stddev,
function samples, per-point log-likelihood); :class:`NPTrainer` (and its one-call form :func:`fit`)
meta-trains on a task sampler such as :class:`GPTaskSampler` (the 1-D GP benchmark) and returns a
:class:`~inference.training.fit.Fit`, :func:`evaluate` scores fixed test sets
(:func:`gp_test_set`), :func:`plot_predictive` draws a 1-D prediction.
"""

from bayesnets.processes.data import KERNELS, TEST_SETS, GPTaskSampler, TaskBatch, TaskSampler, gp_test_set
from bayesnets.processes.models import ANP, CNP, MPNP, NP, NeuralProcess
from bayesnets.processes.plotting import plot_predictive
from bayesnets.processes.predictive import NPPredictive
from bayesnets.processes.training import NPTrainer, evaluate, fit, log_likelihoods

__all__ = [
    "ANP",
    "CNP",
    "KERNELS",
    "MPNP",
    "NP",
    "TEST_SETS",
    "GPTaskSampler",
    "NPPredictive",
    "NPTrainer",
    "NeuralProcess",
    "TaskBatch",
    "TaskSampler",
    "evaluate",
    "fit",
    "gp_test_set",
    "log_likelihoods",
    "plot_predictive",
]
