"""The ``bayesnets`` command.

    bayesnets lc extrapolate curves.csv --horizon 100 [--epochs 20,50,100] [--metric loss] [--png out.png]
    bayesnets bo [--problem branin] [--surrogates gp,ibnn,hmc] [--seeds 2] [--iterations 8] [--out bo_results]

``lc extrapolate`` reads a CSV with one learning curve per column (epoch 1 in the first data
row; an optional header row names the curves; shorter curves leave their trailing cells
empty), extrapolates each with the shipped LC-PFN (:mod:`bayesnets.pfn.lcpfn`), prints a
table of predictive quantiles at chosen epochs and writes a PNG with the observed points, the
predictive median and 50 % / 90 % bands. Malformed input (text in a value cell, an empty file,
a gap inside a curve, a curve longer than the model supports) is reported on stderr with exit
code 2. Subcommands are argparse subparsers, so other groups plug in beside ``lc``.

``bo`` runs Bayesian optimisation (:mod:`bayesnets.bo`, Li, Rudner & Wilson, arXiv 2305.20028) of a
test problem with several surrogates over several seeds, one progress bar per run; it prints a
summary table (final regret mean ± standard error, seconds per iteration) and writes the records
(``<out>/<problem>.json``) and the regret plot (``<out>/<problem>.png``). With no arguments it is a
small run (Branin, GP / I-BNN / HMC, 2 seeds, 8 iterations) that finishes in minutes on a laptop CPU.
Unknown problem or surrogate names are reported with the valid ones, exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CLIError", "main", "read_curves"]

EXIT_USAGE = 2  # argparse's exit status for bad usage; bad input files get the same


class CLIError(Exception):
    """A problem with the user's input, reported as ``error: <message>`` with exit code 2."""


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def read_curves(path: str | Path) -> dict[str, list[float]]:
    """Read learning curves from a CSV file, one curve per column.

    The first row is a header when any of its cells is not a number (column names default to
    ``curve1, curve2, ...``). Every other cell must be a finite number or empty; empty cells may
    only end a column (a curve cannot have gaps).

    Returns:
        Column name -> values, in column order.

    Raises:
        CLIError: unreadable, empty or malformed file, naming the row and column.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [[c.strip() for c in row] for row in csv.reader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CLIError(f"cannot read {path}: {err}") from err
    rows = [r for r in rows if any(r)]  # blank lines carry nothing
    if not rows:
        raise CLIError(f"{path} is empty: expected one learning curve per column")
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    header = any(c and _number(c) is None for c in rows[0])
    names = [c or f"curve{j + 1}" for j, c in enumerate(rows[0])] if header else [f"curve{j + 1}" for j in range(width)]
    data = rows[1:] if header else rows
    first_line = 2 if header else 1
    curves: dict[str, list[float]] = {}
    for j, name in enumerate(names):
        values: list[float] = []
        ended_at = None
        for i, row in enumerate(data):
            cell, line = row[j], first_line + i
            if not cell:
                ended_at = line if ended_at is None else ended_at
                continue
            value = _number(cell)
            if value is None:
                raise CLIError(f"{path}, line {line}, column {name!r}: {cell!r} is not a number")
            if not math.isfinite(value):
                raise CLIError(f"{path}, line {line}, column {name!r}: {cell!r} is not a finite number")
            if ended_at is not None:
                raise CLIError(f"{path}, column {name!r}: empty cell at line {ended_at} inside the curve "
                               "(only trailing cells may be empty)")
            values.append(value)
        if not values:
            raise CLIError(f"{path}, column {name!r} has no values")
        curves[name] = values
    return curves


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _default_epochs(n: int, horizon: int) -> list[int]:
    """The next epoch, the quarter points of the rest, and the horizon."""
    span = horizon - n
    return sorted({n + 1, *(n + math.ceil(k * span / 4) for k in (1, 2, 3)), horizon})


def _lc_extrapolate(args: argparse.Namespace) -> int:
    import torch

    from bayesnets.pfn.lcpfn import LCPFN, CurveTransform, plot_extrapolation

    if not all(0 < q < 1 for q in args.quantiles):
        raise CLIError(f"--quantiles must lie in (0, 1), got {args.quantiles}")
    curves = read_curves(args.csv)
    model = LCPFN.pretrained()
    if not 1 < args.horizon <= model.length:
        raise CLIError(f"--horizon must be in [2, {model.length}], got {args.horizon}")
    for name, values in curves.items():
        if len(values) > model.length:
            raise CLIError(f"curve {name!r} has {len(values)} epochs; LC-PFN supports curves of at most "
                           f"{model.length} epochs (subsample longer curves, e.g. every k-th epoch)")
        if len(values) >= args.horizon:
            raise CLIError(f"curve {name!r} already has {len(values)} epochs; --horizon ({args.horizon}) must be "
                           "later than its last epoch")

    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    cols = min(len(curves), 3)
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    qs = sorted(args.quantiles)
    for k, (name, values) in enumerate(curves.items()):
        y = torch.tensor(values, dtype=torch.float64)
        if args.metric == "loss":
            transform = CurveTransform.loss(y, lower=args.lower if args.lower is not None else 0.0, upper=args.upper)
        else:
            transform = CurveTransform.accuracy(args.lower if args.lower is not None else 0.0,
                                                args.upper if args.upper is not None else 1.0)
        try:
            pred = model.predict(y, args.horizon, transform)
        except ValueError as err:
            raise CLIError(f"curve {name!r}: {err}") from err
        n = len(values)
        wanted = args.epochs or _default_epochs(n, args.horizon)
        bad = [e for e in wanted if not n < e <= args.horizon]
        if bad:
            raise CLIError(f"--epochs {bad} are outside the predicted range {n + 1}..{args.horizon} of curve {name!r}")
        quant = pred.quantile(tuple(qs))
        mean = pred.mean
        print(f"{name}: {n} epochs observed, predicting {n + 1}..{args.horizon} ({args.metric})")
        head = f"{'epoch':>6} {'mean':>9} " + " ".join(f"{'q' + format(q, 'g'):>9}" for q in qs)
        print(head)
        for e in wanted:
            i = e - n - 1
            print(f"{e:>6d} {float(mean[i]):>9.4f} " + " ".join(f"{float(quant[j, i]):>9.4f}" for j in range(len(qs))))
        print()
        plot_extrapolation(y, pred, ax=axes.flat[k], title=name)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    fig.tight_layout()
    png = Path(args.png) if args.png else Path(args.csv).with_suffix(".png")
    try:
        fig.savefig(png, dpi=args.dpi)
    except OSError as err:
        raise CLIError(f"cannot write {png}: {err}") from err
    finally:
        plt.close(fig)
    print(f"wrote {png}")
    return 0


#: ``bayesnets bo`` with no arguments: a run of a few minutes on a 2-core CPU.
BO_DEFAULT_PROBLEM = "branin"
BO_DEFAULT_SURROGATES = ("gp", "ibnn", "hmc")
BO_DEFAULT_SEEDS = 2
BO_DEFAULT_ITERATIONS = 8
#: torch intra-op threads for ``bo``: its tensors are small, so intra-op threads cost more in
#: synchronisation than they give (one thread was about 6x faster for the HMC fits on 2 cores;
#: docs/bo.md).
BO_DEFAULT_THREADS = 1


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _bo_table(groups: dict, problem: str) -> str:
    """The summary table: final trace (mean ± se) and seconds per iteration, one row per surrogate."""
    metric = next(iter(groups.values())).metric
    head = f"final {metric} (mean ± se)"
    width = max(len(head), 26)
    lines = [f"{'surrogate':<12} {'seeds':>5}  {head:<{width}}  {'fit s/it':>9} {'acq s/it':>9} {'total s/it':>10}"]
    for g in groups.values():
        mean, se = g.final
        cell = f"{mean:.4g} ± {se:.2g}" if math.isfinite(se) else f"{mean:.4g} ± n/a"
        lines.append(f"{g.surrogate:<12} {len(g.seeds):>5}  {cell:<{width}}  {g.fit_time:>9.3f} {g.acq_time:>9.3f} "
                     f"{g.time_per_iteration[0]:>10.3f}")
    return "\n".join(lines)


def _fit_warning_lines(records: list) -> list[str]:
    """Per surrogate whose fits warned: in how many iterations, and the first message."""
    lines = []
    for name in dict.fromkeys(r.surrogate for r in records):
        per_it = [ws for r in records if r.surrogate == name for ws in r.fit_warnings]
        warned = [ws for ws in per_it if ws]
        if warned:
            lines.append(f"note: {name}'s fit warned in {len(warned)} of {len(per_it)} iterations (all messages in "
                         f"fit_warnings of the JSON records), e.g. {warned[0][0]}")
    return lines


def _bo(args: argparse.Namespace) -> int:
    from bayesnets.bo import PROBLEMS, aggregate, get_problem, plot_regret, run_bo, save_records
    from bayesnets.surrogates import SURROGATES

    if args.problem not in PROBLEMS:
        raise CLIError(f"unknown problem {args.problem!r}; valid problems: {', '.join(PROBLEMS)}")
    surrogates = list(dict.fromkeys(args.surrogates or BO_DEFAULT_SURROGATES))
    unknown = [s for s in surrogates if s not in SURROGATES]
    if unknown:
        raise CLIError(f"unknown surrogate(s) {', '.join(map(repr, unknown))}; valid surrogates: "
                       f"{', '.join(SURROGATES)}")
    for flag, value, least in (("--seeds", args.seeds, 1), ("--iterations", args.iterations, 0),
                               ("--batch-size", args.batch_size, 1)):
        if value < least:
            raise CLIError(f"{flag} must be at least {least}, got {value}")
    if args.num_init is not None and args.num_init < 1:
        raise CLIError(f"--num-init must be at least 1, got {args.num_init}")
    if args.threads < 1:
        raise CLIError(f"--threads must be at least 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    problem = get_problem(args.problem, noise_std=args.noise_std)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"cannot create {out}: {err}") from err
    num_init = args.num_init or problem.paper.num_init
    print(f"{problem.name}: {problem.dim} inputs, {problem.num_objectives} objective(s); {len(surrogates)} "
          f"surrogate(s) x {args.seeds} seed(s), {num_init} initial points + {args.iterations} iterations of "
          f"batch {args.batch_size}")
    records = []
    for seed in range(args.seed, args.seed + args.seeds):
        for name in surrogates:
            try:
                with warnings.catch_warnings():
                    # run_bo's one-per-run summary of the fits' warnings: counted under the table instead
                    warnings.filterwarnings("ignore", message=".*the surrogate fit warned", category=RuntimeWarning)
                    records.append(run_bo(problem, name, args.iterations, batch_size=args.batch_size,
                                          num_init=num_init, seed=seed, acquisition=args.acquisition,
                                          progress=not args.no_progress))
            except ValueError as err:
                raise CLIError(f"{name}, seed {seed}: {err}") from err
    json_path = save_records(records, out / f"{problem.name}.json")
    png = out / f"{problem.name}.png"
    plot_regret(records, path=png, dpi=args.dpi)
    print(_bo_table(aggregate(records), problem.name))
    for line in _fit_warning_lines(records):
        print(line)
    print(f"wrote {json_path} and {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``bayesnets`` argument parser (one subparser per command group)."""
    parser = argparse.ArgumentParser(prog="bayesnets", description="Bayesian deep learning tools.")
    groups = parser.add_subparsers(dest="group", required=True, metavar="{lc,bo}")
    lc = groups.add_parser("lc", help="learning curves (LC-PFN, arXiv:2310.20447)")
    lc_cmds = lc.add_subparsers(dest="command", required=True, metavar="{extrapolate}")
    ex = lc_cmds.add_parser("extrapolate", help="extrapolate partial learning curves from a CSV file",
                            description="Extrapolate learning curves (one per CSV column) with the shipped LC-PFN: "
                                        "print predictive quantiles, write a PNG.")
    ex.add_argument("csv", help="CSV file: one curve per column, epoch 1 first, optional header row")
    ex.add_argument("--horizon", type=int, default=100, help="last epoch to predict (<= 100; default 100)")
    ex.add_argument("--epochs", type=_ints, default=None,
                    help="comma-separated epochs for the table (default: next epoch, quarter points, horizon)")
    ex.add_argument("--quantiles", type=_floats, default=[0.05, 0.25, 0.5, 0.75, 0.95],
                    help="comma-separated quantile levels (default 0.05,0.25,0.5,0.75,0.95)")
    ex.add_argument("--metric", choices=["accuracy", "loss"], default="accuracy",
                    help="accuracy: higher is better, mapped from [lower, upper] (default [0, 1]); loss: lower is "
                         "better, mapped from [lower, upper] (default [0, max observed loss])")
    ex.add_argument("--lower", type=float, default=None, help="metric value mapped to the bottom of the scale")
    ex.add_argument("--upper", type=float, default=None, help="metric value mapped to the top (100 for percent)")
    ex.add_argument("--png", default=None, help="output PNG (default: the CSV path with .png)")
    ex.add_argument("--dpi", type=int, default=100)
    ex.set_defaults(run=_lc_extrapolate)

    bo = groups.add_parser("bo", help="Bayesian optimisation with BNN surrogates (arXiv:2305.20028)",
                           description="Run BO of a test problem with several surrogates over several seeds; print "
                                       "a summary table, write the records (JSON) and a regret plot (PNG).")
    bo.add_argument("--problem", default=BO_DEFAULT_PROBLEM,
                    help=f"test problem (default {BO_DEFAULT_PROBLEM}; see bayesnets.bo.PROBLEMS)")
    bo.add_argument("--surrogates", type=_names, default=None,
                    help=f"comma-separated surrogate names (default {','.join(BO_DEFAULT_SURROGATES)})")
    bo.add_argument("--seeds", type=int, default=BO_DEFAULT_SEEDS, help="number of seeds (runs per surrogate)")
    bo.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    bo.add_argument("--iterations", type=int, default=BO_DEFAULT_ITERATIONS, help="BO iterations per run")
    bo.add_argument("--batch-size", type=int, default=1, help="candidates per iteration (q)")
    bo.add_argument("--num-init", type=int, default=None,
                    help="initial Sobol points (default the paper's: 10, or 100 in high dimensions)")
    bo.add_argument("--acquisition", default=None, choices=["qlogei", "qlognei", "qucb", "qlogehvi", "qlognehvi"],
                    help="default qlogei (one objective) or qlogehvi (several)")
    bo.add_argument("--noise-std", type=float, default=None, help="observation noise standard deviation")
    bo.add_argument("--out", default="bo_results", help="output folder for <problem>.json and <problem>.png")
    bo.add_argument("--threads", type=int, default=BO_DEFAULT_THREADS,
                    help=f"torch threads (default {BO_DEFAULT_THREADS}: faster for these small models)")
    bo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    bo.add_argument("--dpi", type=int, default=100)
    bo.set_defaults(run=_bo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bayesnets`` command; returns the exit status (0 ok, 2 bad usage or input)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CLIError as err:
        print(f"bayesnets: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
