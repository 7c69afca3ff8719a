"""1-D regression with a Bayesian neural network: NUTS and SVI side by side.

Fits a 1-16-1 tanh BNN (layerwise Gaussian prior, latent noise scale) to noisy
``sin(2x)`` data with a gap in the middle, by NUTS (Pyro, several chains) and by
mean-field SVI; writes a PNG with each predictive mean and 90% band, and prints
R-hat/ESS of the function values at ten test points (weights are not identifiable
across chains, function values are), the noise scale, and test RMSE / NLL.

Run:  python examples/bnn_regression.py [--out bnn_regression.png] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyro.distributions as dist
import torch
from torch import nn

from bayesnets import BayesianNet, Gaussian
from inference import NUTS, SVI, diagnostics
from priors import LayerwiseGaussian

NOISE = 0.1


def make_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = sin(2x) + N(0, 0.1^2)`` on [-3, 3] without the points in (-0.5, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3 * n, 1, generator=g) * 6 - 3
    x = x[(x[:, 0] < -0.5) | (x[:, 0] > 1.0)][:n]
    y = torch.sin(2 * x[:, 0]) + NOISE * torch.randn(x.shape[0], generator=g)
    return x, y


def make_model() -> BayesianNet:
    net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    return BayesianNet(net, LayerwiseGaussian(scale=1.0), Gaussian(scale=dist.HalfNormal(0.5)))


def test_metrics(post, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """RMSE of the predictive mean and NLL of the predictive mixture (per point)."""
    pred = post.predict(x)
    rmse = float((pred.mean()[:, 0] - y).pow(2).mean().sqrt())
    f = pred.f.flatten(0, 1)[..., 0]
    scale = post["likelihood.scale"].flatten()[:, None]
    logp = torch.distributions.Normal(f, scale).log_prob(y)
    nll = -float((torch.logsumexp(logp, 0) - math.log(f.shape[0])).mean())
    return rmse, nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bnn_regression.png", help="where to write the figure")
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    x, y = make_data(60, seed=args.seed)
    x_test, y_test = make_data(200, seed=args.seed + 1)
    grid = torch.linspace(-4, 4, 200).unsqueeze(-1)
    probe = torch.linspace(-3, 3, 10).unsqueeze(-1)

    if args.quick:
        nuts = NUTS(num_warmup=20, num_samples=20, num_chains=2, max_tree_depth=4, seed=args.seed)
        svi = SVI(guide="normal", num_steps=100, num_samples=100, seed=args.seed)
    else:
        nuts = NUTS(num_warmup=300, num_samples=300, num_chains=2, max_tree_depth=7, seed=args.seed)
        # A small initial guide scale matters for BNNs: at Pyro's default (0.1) the weight
        # noise swamps the signal early and mean-field VI settles near the prior.
        svi = SVI(guide="normal", num_steps=6000, lr=0.02, final_lr=0.001, init_scale=0.01, num_samples=600,
                  seed=args.seed)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, engine in zip(axes, (nuts, svi)):
        name = type(engine).__name__
        start = time.perf_counter()
        post = engine.fit(make_model(), x, y)
        seconds = time.perf_counter() - start
        rmse, nll = test_metrics(post, x_test, y_test)
        print(f"\n== {name}: {seconds:.1f} s, {post.num_chains} chain(s) x {post.num_draws} draws")
        print(f"test RMSE {rmse:.3f}, test NLL {nll:.3f} (noise floor: RMSE {NOISE}, NLL "
              f"{0.5 * math.log(2 * math.pi * NOISE**2) + 0.5:.3f})")
        f_probe = post.predict(probe).f[..., 0]
        table = diagnostics.summary({"f": f_probe, "noise": post["likelihood.scale"]})
        print(table[["mean", "sd", "ess_bulk", "r_hat"]].to_string())
        if name == "NUTS":
            print(f"divergences: {diagnostics.divergences(post)}, mean tree depth "
                  f"{post.stats['tree_depth'].double().mean():.1f}")

        pred = post.predict(grid)
        lo, hi = pred.quantile([0.05, 0.95], of="y")
        ax.fill_between(grid[:, 0], lo, hi, alpha=0.3, label="90% predictive band")
        ax.plot(grid[:, 0], pred.mean()[:, 0], lw=2, label="predictive mean")
        ax.plot(grid[:, 0], torch.sin(2 * grid[:, 0]), "k--", lw=1, label="sin(2x)")
        ax.scatter(x[:, 0], y, s=10, c="k", label="data")
        ax.set_title(f"{name}: test RMSE {rmse:.3f}, NLL {nll:.2f}")
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
