"""How well and how fast each BO surrogate fits: held-out error of the posterior mean and fit seconds.

The defaults of the network surrogates (``bayesnets/surrogates/bnn.py``) are chosen with this script:
for each problem, a Sobol design (Branin 15 points, Hartmann-6 40 points) is fitted by every surrogate
named, and the posterior mean is scored on 300 uniform test points by its RMSE divided by the test
values' standard deviation (1 = no better than the mean). Li, Rudner & Wilson (arXiv 2305.20028) compare
the same surrogates by BO regret (``benchmarks/bo.py``); this isolates the fit from the acquisition.

Usage::

    python benchmarks/surrogate_fit.py                                    # gp, ibnn, hmc, two seeds
    python benchmarks/surrogate_fit.py --surrogates gp,hmc --options '{"hmc": {"engine_options": {"num_warmup": 60}}}'
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
from botorch.utils.sampling import draw_sobol_samples
from botorch.utils.transforms import normalize, unnormalize

from bayesnets.bo import get_problem
from bayesnets.surrogates import make_surrogate

#: (problem, training points)
DESIGNS = (("branin", 15), ("hartmann6", 40))
NUM_TEST = 300


def relative_rmse(model, X_test: torch.Tensor, Y_test: torch.Tensor) -> float:
    """RMSE of the posterior mean at ``X_test`` ``[n, d]`` over the standard deviation of ``Y_test`` ``[n, 1]``."""
    with torch.no_grad():
        mean = model.posterior(X_test.unsqueeze(-2)).mean.reshape(-1)
    return float((mean - Y_test.reshape(-1)).square().mean().sqrt() / Y_test.std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--surrogates", default="gp,ibnn,hmc", help="comma-separated surrogate names")
    parser.add_argument("--options", default="{}", help="JSON: surrogate name -> options for make_surrogate")
    parser.add_argument("--seeds", type=int, default=2, help="fits per surrogate and problem (seeds 0..n-1)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = json.loads(args.options)
    names = [s.strip() for s in args.surrogates.split(",") if s.strip()]
    print(f"# torch {torch.__version__}, {args.threads} thread(s), float64; relative test RMSE (1 = predicting "
          "the mean) and fit seconds per seed")
    for problem_name, n in DESIGNS:
        problem = get_problem(problem_name).to(dtype=torch.float64)
        X = draw_sobol_samples(bounds=problem.bounds, n=n, q=1, seed=3).squeeze(-2)
        Y = problem(X)
        gen = torch.Generator().manual_seed(0)
        X_test = torch.rand(NUM_TEST, problem.dim, generator=gen, dtype=torch.float64)
        Y_test = problem(unnormalize(X_test, problem.bounds))
        for name in names:
            errors, seconds = [], []
            for seed in range(args.seeds):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # divergence notes of short chains: the error shows the fit
                    model = make_surrogate(name, normalize(X, problem.bounds), Y, seed=seed,
                                           **options.get(name, {}))
                seconds.append(time.perf_counter() - start)
                errors.append(relative_rmse(model, X_test, Y_test))
            print(f"{problem_name:<10} n={n:<3} {name:<9} rel. RMSE {' / '.join(f'{e:.3f}' for e in errors)}   "
                  f"fit s {' / '.join(f'{t:.2f}' for t in seconds)}", flush=True)


if __name__ == "__main__":
    main()
