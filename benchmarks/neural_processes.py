"""CNP, NP, ANP and MPNP on the 1-D GP regression benchmark (P40, arXiv 2304.09431).

Every model is meta-trained on RBF tasks with the same budget (steps x tasks per step, fresh
tasks every step, Adam 5e-4 with cosine decay) and scored on the four fixed test sets of
:func:`bayesnets.processes.gp_test_set` — RBF, Matérn-5/2, Periodic, RBF + Student-t noise —
by the per-point context and target log-likelihood, averaged over ``--eval-samples`` function
draws (mean ± std over seeds). The paper's claim checked here: MPNP >= NP on the target
log-likelihood of every set.

    python benchmarks/neural_processes.py                 # the reported run (see docs/processes.md)
    python benchmarks/neural_processes.py --quick         # a smoke run (minutes)
    python benchmarks/neural_processes.py --models NP MPNP  # the claim only
"""

from __future__ import annotations

import argparse
import time

import torch

from bayesnets.processes import ANP, CNP, MPNP, NP, TEST_SETS, GPTaskSampler, evaluate, fit, gp_test_set

MODELS = {"CNP": CNP, "NP": NP, "ANP": ANP, "MPNP": MPNP}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=32, help="tasks per training step")
    parser.add_argument("--hidden", type=int, default=64, help="width of every layer and representation")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test-tasks", type=int, default=512, help="tasks per test set (16 per split)")
    parser.add_argument("--eval-samples", type=int, default=50, help="function draws per prediction")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    # One thread: the networks are small, and on a busy 2-core machine intra-op threads mostly
    # wait on each other (measured several times slower with 2).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="200 steps, 1 seed, 128 test tasks")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds, args.test_tasks = 200, 1, 128
    torch.set_num_threads(args.threads)

    test_sets = {name: gp_test_set(name, num_tasks=args.test_tasks) for name in TEST_SETS}
    print(f"budget per model: {args.steps} steps x {args.batch_size} RBF tasks (fresh each step), "
          f"hidden {args.hidden}, Adam 5e-4 cosine; test sets {args.test_tasks} tasks each, "
          f"{args.eval_samples} function draws; {args.seeds} seeds; torch threads {args.threads}", flush=True)

    # results[model][set]["context_ll" | "target_ll"] -> list over seeds
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    train_time: dict[str, list[float]] = {m: [] for m in args.models}
    eval_time: dict[str, list[float]] = {m: [] for m in args.models}
    for seed in range(args.seeds):
        for name in args.models:
            torch.manual_seed(seed)
            model = MODELS[name](hidden=args.hidden)
            t0 = time.perf_counter()
            fit(model, GPTaskSampler("rbf"), num_steps=args.steps, batch_size=args.batch_size, seed=seed,
                progress=False)
            train_time[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for set_name, tasks in test_sets.items():
                ll = evaluate(model, tasks, num_samples=args.eval_samples, seed=seed)
                for key, value in ll.items():
                    results.setdefault(name, {}).setdefault(set_name, {}).setdefault(key, []).append(value)
            eval_time[name].append(time.perf_counter() - t0)
            print(f"seed {seed} {name}: train {train_time[name][-1]:.0f} s, eval {eval_time[name][-1]:.0f} s, "
                  + ", ".join(f"{s} tgt {results[name][s]['target_ll'][-1]:.3f}" for s in test_sets), flush=True)

    def cell(values: list[float]) -> str:
        t = torch.tensor(values, dtype=torch.float64)
        std = t.std().item() if len(values) > 1 else float("nan")
        return f"{t.mean().item():7.3f} ± {std:5.3f}"

    print("\nper-point log-likelihood, mean ± std over seeds (context | target)")
    header = f"| {'model':5} | " + " | ".join(f"{s + ' ctx':>16} | {s + ' tgt':>16}" for s in test_sets) + \
        " | train s/model |"
    print(header)
    print("|" + "---|" * (2 * len(test_sets) + 2))
    for name in args.models:
        row = " | ".join(f"{cell(results[name][s]['context_ll']):>16} | {cell(results[name][s]['target_ll']):>16}"
                         for s in test_sets)
        print(f"| {name:5} | {row} | {sum(train_time[name]) / len(train_time[name]):13.0f} |")

    if "MPNP" in args.models and "NP" in args.models:
        print("\nMPNP >= NP on target log-likelihood (mean over seeds; difference per seed, mean ± std):")
        for s in test_sets:
            mp = torch.tensor(results["MPNP"][s]["target_ll"], dtype=torch.float64)
            base = torch.tensor(results["NP"][s]["target_ll"], dtype=torch.float64)
            diff = mp - base
            spread = diff.std().item() if len(diff) > 1 else float("nan")
            print(f"  {s:9}: MPNP {mp.mean():.4f} vs NP {base.mean():.4f}, difference {diff.mean():+.4f} ± "
                  f"{spread:.4f} -> {'yes' if mp.mean() >= base.mean() else 'NO'}")

if __name__ == "__main__":
    main()
