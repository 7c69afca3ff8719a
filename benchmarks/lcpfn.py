"""Shipped LC-PFN vs our NUTS baseline on prior curves (LC-PFN paper, arXiv:2310.20447, §4.1, Table 2).

Fresh curves from the LC-PFN prior (``priors.tasks.LearningCurvePrior``, seed 2023; the shipped
model was trained on seed 0's stream), each observed up to 10 / 20 / 40 / 80 % of its 100 epochs.
Per cut-off: the log-likelihood of the unseen part under the posterior predictive (mean over the
unseen epochs of the per-epoch log density, then mean over curves, as the paper's Table 2), and
the wall time per inference, for

* ``pfn``  — ``LCPFN.pretrained()`` on ``--curves`` curves (log-likelihoods batched; timed one
  curve at a time on the first ``--timed`` curves, as NUTS is);
* ``nuts`` — :func:`bayesnets.pfn.lc_mcmc.extrapolate_mcmc`: the same prior as a Pyro model with
  the rejection rule as a hard constraint, sampled by ``inference.hmc.NUTS`` (``--chains`` chains
  of ``--warmup`` + ``--samples`` iterations), predictive = Gaussian mixture over the draws; on the
  first ``--nuts-curves`` curves only (``pfn@nuts`` is the PFN on those same curves).

Times are per inference, one curve at a time: wall clock and process CPU time (the ratio of CPU
times is the steadier one on a shared machine). The PFN is timed on ``predict`` (the forward pass
and its predictive distribution), NUTS on ``extrapolate_mcmc`` (warm-up, sampling, predictive).
``--nuts-cache FILE`` stores each NUTS result (keyed by seed, curve, cut-off and settings) as it
finishes, so a killed run resumes and the PFN columns can be re-measured without re-running NUTS.

    python benchmarks/lcpfn.py --nuts-cache /tmp/lcpfn_nuts.json    # the table in docs/lcpfn.md
    python benchmarks/lcpfn.py --quick                               # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import torch

from bayesnets.pfn.lc_mcmc import extrapolate_mcmc
from bayesnets.pfn.lcpfn import LCPFN
from priors.tasks import LearningCurvePrior

CUTOFFS = (0.1, 0.2, 0.4, 0.8)
# Paper Table 2 (10 000 prior curves): LC-PFN "P2" (10M curves, 3 layers, emsize 256) and the best
# MCMC row per cut-off (M2/M3: emcee, 4000 samples x 100 walkers).
PAPER_PFN_SMALL = (1.65, 2.04, 2.35, 2.49)
PAPER_MCMC_BEST = (1.64, 1.96, 2.29, 2.49)
PAPER_SPEEDUP = 10_000  # the abstract's "over 10,000x faster"


def median(v: list[float]) -> float:
    return sorted(v)[len(v) // 2]


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", type=int, default=1000)
    parser.add_argument("--timed", type=int, default=100, help="curves the PFN is timed on, one at a time")
    parser.add_argument("--nuts-curves", type=int, default=5)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--max-tree-depth", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--quick", action="store_true", help="20 curves, 1 NUTS curve with short chains")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--nuts-cache", default=None, help="JSON file of NUTS results to reuse and extend")
    args = parser.parse_args()
    if args.quick:
        args.curves, args.timed, args.nuts_curves, args.chains, args.warmup, args.samples = 20, 5, 1, 2, 30, 30
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # NUTS divergences at the rule's hard boundary; pure-noise prior curves

    cache = json.loads(Path(args.nuts_cache).read_text()) if args.nuts_cache and Path(args.nuts_cache).exists() else {}
    model = LCPFN.pretrained()
    gen = torch.Generator().manual_seed(args.seed)
    _, y = LearningCurvePrior().double().sample(args.curves, 100, generator=gen)
    rows = []
    for frac in CUTOFFS:
        n = round(frac * 100)
        with torch.no_grad():
            ll_pfn = torch.cat([model.predict(y[i:i + 250, :n]).log_prob(y[i:i + 250, n:]).mean(-1)
                                for i in range(0, args.curves, 250)])
        wall, cpu = [], []
        for i in range(min(args.timed, args.curves)):
            t0, c0 = time.perf_counter(), time.process_time()
            model.predict(y[i, :n])
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        nuts = []
        for i in range(min(args.nuts_curves, args.curves)):
            key = (f"seed={args.seed} curve={i} n={n} chains={args.chains} warmup={args.warmup} "
                   f"samples={args.samples} depth={args.max_tree_depth}")
            if key not in cache:
                t0, c0 = time.perf_counter(), time.process_time()
                fit = extrapolate_mcmc(y[i, :n], 100, num_chains=args.chains, num_warmup=args.warmup,
                                       num_samples=args.samples, max_tree_depth=args.max_tree_depth,
                                       seed=args.seed + i)
                cache[key] = {"ll": float(fit.log_prob(y[i, n:]).mean()), "wall": time.perf_counter() - t0,
                              "cpu": time.process_time() - c0}
                if args.nuts_cache:
                    Path(args.nuts_cache).write_text(json.dumps(cache, indent=1))
            nuts.append(cache[key])
        k = len(nuts)
        row = {"cutoff": frac, "n": n, "pfn": mean_se(ll_pfn), "pfn_at_nuts": mean_se(ll_pfn[:k]) if k else None,
               "nuts": mean_se(torch.tensor([r["ll"] for r in nuts])) if k else None,
               "t_pfn": median(wall), "c_pfn": median(cpu),
               "t_nuts": median([r["wall"] for r in nuts]) if k else None,
               "c_nuts": median([r["cpu"] for r in nuts]) if k else None, "nuts_curves": k}
        rows.append(row)
        print(f"cut-off {frac:.0%} done: pfn {row['pfn'][0]:.3f}" + (f", nuts {row['nuts'][0]:.3f}" if k else ""),
              flush=True)

    print()
    print(f"{args.curves} prior curves (seed {args.seed}); NUTS on the first {args.nuts_curves}: "
          f"{args.chains} chains x ({args.warmup} warm-up + {args.samples} draws), "
          f"max tree depth {args.max_tree_depth}; {torch.get_num_threads()} torch thread(s)")
    print(f"{'cut':>4} | {'paper P2':>8} {'paper MCMC':>10} | {'pfn':>14} | {'pfn@nuts':>14} {'nuts':>14} | "
          f"{'pfn ms':>6} {'cpu ms':>6} | {'nuts s':>6} {'cpu s':>6} | {'wall x':>7} {'cpu x':>7}")
    print("-" * 129)
    for row, p2, mc in zip(rows, PAPER_PFN_SMALL, PAPER_MCMC_BEST, strict=True):
        def fmt(v: tuple[float, float] | None) -> str:
            return f"{v[0]:6.3f} ± {v[1]:5.3f}" if v else " " * 14

        k = bool(row["nuts_curves"])
        wall_x = row["t_nuts"] / row["t_pfn"] if k else math.nan
        cpu_x = row["c_nuts"] / row["c_pfn"] if k else math.nan
        print(f"{row['cutoff']:>4.0%} | {p2:>8.2f} {mc:>10.2f} | {fmt(row['pfn'])} | {fmt(row['pfn_at_nuts'])} "
              f"{fmt(row['nuts'])} | {row['t_pfn'] * 1e3:>6.1f} {row['c_pfn'] * 1e3:>6.1f} | "
              f"{row['t_nuts'] if k else math.nan:>6.1f} {row['c_nuts'] if k else math.nan:>6.1f} | "
              f"{wall_x:>7.0f} {cpu_x:>7.0f}")
    ratios = [r["c_nuts"] / r["c_pfn"] for r in rows if r["nuts_curves"]]
    if ratios:
        print(f"\nNUTS / PFN CPU time per inference (medians per cut-off): min {min(ratios):,.0f}x, "
              f"max {max(ratios):,.0f}x (goal >= {PAPER_SPEEDUP:,}x)")
    gaps = [r["pfn"][0] - p for r, p in zip(rows, PAPER_PFN_SMALL, strict=True)]
    print("PFN log-likelihood minus paper's P2: " + ", ".join(f"{g:+.3f}" for g in gaps))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
