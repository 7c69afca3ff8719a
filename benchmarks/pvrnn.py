"""PV-RNN with error regression vs without vs a VRNN, on online prediction (P15, arXiv 1811.01339).

Data: the probabilistic finite-state machine of :class:`bayesnets.pvrnn.PFSMTrajectories`
(three 2-D loop primitives of 20 steps, random transitions between them). Each seed draws its
own training and held-out sequences and initialisations. For every meta-prior ``w``:

* **PV-RNN + ER**: a PV-RNN trained at ``w``, predicting online with
  :func:`~bayesnets.pvrnn.error_regression` (window, iterations, lr below);
* **PV-RNN, no ER**: the same trained model without error regression. PV-RNN has no encoder
  and no input, so without ER nothing of the held-out sequence reaches it: it predicts by
  free-running generation from its prior (one sample path per sequence);
* **VRNN**: the variational RNN of Chung et al. 2015 (arXiv 1506.02216), the standard
  variational RNN with an encoder q(z_t | x_t, h_{t-1}), trained on the same objective with
  KL weight ``w``; it predicts by filtering the observations and sampling its prior ahead.

Reference rows that need no training: persistence (x_{t+k} = x_t) and constant velocity.
Score: squared error per coordinate of the predictions made at steps t >= window (after the
first window has filled), for leads 1 and ``--horizon``; mean ± std over seeds.

    python benchmarks/pvrnn.py            # the reported run (see docs/pvrnn.md)
    python benchmarks/pvrnn.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bayesnets.pvrnn import (
    PVRNN,
    VRNN,
    PFSMTrajectories,
    error_regression,
    online_prediction_error,
    train_pvrnn,
    train_vrnn,
)


def free_running_predictions(model: PVRNN, num_sequences: int, num_steps: int, horizon: int) -> torch.Tensor:
    """``[B, T, H, X]`` predictions of a model that never sees the data: one prior path per sequence."""
    with torch.no_grad():
        path = model.generate(num_steps + horizon, num_samples=num_sequences)  # [B, T + H, X]
    return path[:, 1:].unfold(1, horizon, 1)[:, :num_steps].permute(0, 1, 3, 2)


def reference_predictions(x: torch.Tensor, horizon: int) -> dict[str, torch.Tensor]:
    """Persistence and constant-velocity extrapolation, ``[B, T, H, X]``."""
    lead = torch.arange(1, horizon + 1, dtype=x.dtype)[None, None, :, None]
    velocity = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)
    return {"persistence": x[:, :, None].expand(-1, -1, horizon, -1),
            "constant velocity": x[:, :, None] + lead * velocity[:, :, None]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meta-priors", type=float, nargs="+", default=[1e-4, 1e-2, 1.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train", type=int, default=64, help="training sequences")
    parser.add_argument("--test", type=int, default=16, help="held-out sequences")
    parser.add_argument("--steps", type=int, default=60, help="steps per sequence")
    parser.add_argument("--epochs", type=int, default=600, help="full-batch Adam steps per model")
    parser.add_argument("--lr", type=float, default=1e-2, help="training learning rate")
    parser.add_argument("--hidden", type=int, nargs="+", default=[24], help="PV-RNN units per layer, bottom first")
    parser.add_argument("--latent", type=int, nargs="+", default=[2], help="PV-RNN latents per layer")
    parser.add_argument("--taus", type=float, nargs="+", default=[2.0], help="PV-RNN time constants per layer")
    parser.add_argument("--vrnn-hidden", type=int, default=16)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=50, help="ER Adam steps per time step (Idei et al.: 50)")
    parser.add_argument("--er-lr", type=float, default=0.09, help="ER Adam learning rate (Idei et al.: 0.09)")
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest for these small sequential nets")
    parser.add_argument("--quick", action="store_true", help="1 seed, 150 epochs, 5 ER iterations")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.iterations = 1, 150, 5
    torch.set_num_threads(args.threads)
    data = PFSMTrajectories()
    n_pv = sum(p.numel() for p in PVRNN(2, args.hidden, args.latent, args.taus).parameters())
    n_vr = sum(p.numel() for p in VRNN(2, args.vrnn_hidden, 2, 8).parameters())
    print(f"PFSM data: {args.train} training / {args.test} held-out sequences of {args.steps} steps per seed; "
          f"{args.epochs} Adam epochs (lr {args.lr}) per model; PV-RNN layers {args.hidden}, z {args.latent}, "
          f"tau {args.taus} ({n_pv} weights); VRNN GRU {args.vrnn_hidden}, z 2 ({n_vr} weights); ER window "
          f"{args.window}, {args.iterations} iterations, lr {args.er_lr}; seeds {args.seeds}; torch threads "
          f"{args.threads}", flush=True)

    # scores[(method, w)] -> list over seeds of [lead 1, lead H] errors
    scores: dict[tuple[str, float | None], list[list[float]]] = {}
    timing: dict[str, list[float]] = {"PV-RNN train": [], "ER": [], "VRNN train": []}
    start = args.window  # score predictions made once the first window has filled

    def record(key: tuple[str, float | None], predictions: torch.Tensor, x: torch.Tensor) -> None:
        err = online_prediction_error(predictions, x, start=start)
        scores.setdefault(key, []).append([err[0].item(), err[-1].item()])

    for seed in range(args.seeds):
        x_train, _ = data.sample(args.train, args.steps, generator=torch.Generator().manual_seed(1000 + seed))
        x_test, _ = data.sample(args.test, args.steps, generator=torch.Generator().manual_seed(2000 + seed))
        for name, pred in reference_predictions(x_test, args.horizon).items():
            record((name, None), pred, x_test)
        for w in args.meta_priors:
            torch.manual_seed(seed)
            model = PVRNN(2, args.hidden, args.latent, args.taus, meta_prior=w)
            t0 = time.perf_counter()
            train_pvrnn(model, x_train, num_steps=args.epochs, lr=args.lr, progress=False)
            timing["PV-RNN train"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = error_regression(model, x_test, window=args.window, iterations=args.iterations,
                                      lr=args.er_lr, horizon=args.horizon)
            timing["ER"].append(time.perf_counter() - t0)
            record(("PV-RNN + ER", w), result.predictions, x_test)
            record(("PV-RNN, no ER", w), free_running_predictions(model, args.test, args.steps, args.horizon),
                   x_test)

            torch.manual_seed(seed)
            vrnn = VRNN(2, hidden_size=args.vrnn_hidden, latent_size=2, feature_size=8, kl_weight=w)
            t0 = time.perf_counter()
            train_vrnn(vrnn, x_train, num_steps=args.epochs, lr=args.lr, progress=False)
            timing["VRNN train"].append(time.perf_counter() - t0)
            record(("VRNN", w), vrnn.predict_online(x_test, horizon=args.horizon), x_test)
            last = {k[0]: v[-1] for k, v in scores.items() if k[1] == w}
            print(f"seed {seed} w {w:g}: " + "; ".join(f"{k} {v[0]:.4f}/{v[1]:.4f}" for k, v in last.items()),
                  flush=True)

    def fmt(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    print(f"\nonline prediction error (squared error per coordinate, held-out, t >= {start}; mean ± std over "
          f"{args.seeds} seeds)")
    print(f"| method | w | lead 1 | lead {args.horizon} |")
    print("|---|---|---|---|")
    for (method, w), runs in sorted(scores.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        cols = [fmt([r[i] for r in runs]) for i in range(2)]
        print(f"| {method} | {'-' if w is None else f'{w:g}'} | {cols[0]} | {cols[1]} |")
    print("\nmean seconds per run: " + ", ".join(f"{k} {statistics.mean(v):.1f}" for k, v in timing.items() if v))


if __name__ == "__main__":
    main()
