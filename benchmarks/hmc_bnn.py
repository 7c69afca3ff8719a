"""Effective samples per second of HMC on a small Bayesian neural network (issue 3).

The model: a 1-50-1 tanh network, 200 points of ``sin(2x) + N(0, 0.1^2)`` with ``x`` uniform
on ``[-3, 3]``, weight priors ``N(0, 1)`` for the hidden layer (weights and biases) and
``N(0, 1/50)`` for the output weights (``LayerwiseGaussian(1.0)``: std ``1/sqrt(fan_in)``;
the output bias is bias-like and keeps ``N(0, 1)``), Gaussian noise 0.1 known.

The figure: effective samples per second of wall time (warm-up and any compilation
included) of the function values ``f`` at 10 test points -- bulk ESS computed per chain and
summed over chains, the minimum over the 10 points (weights are not identifiable across
chains, so function values are the honest target).

Engines, in this process on this machine: Pyro's stock NUTS on the Pyro model (1 chain),
our :class:`~inference.hmc.BatchedHMC` (16 chains on CPU, eager and compiled; 256 and 1,024
chains on a GPU when there is one), and NumPyro's NUTS when it is installed (1 chain and 4
vectorised chains). Ratios are printed against Pyro and against NumPyro's best.

Usage::

    python benchmarks/hmc_bnn.py            # full run (Pyro's 100 + 100 NUTS alone takes ~11 minutes)
    python benchmarks/hmc_bnn.py --quick    # a smoke test with few iterations everywhere (rough numbers)

Iterations: Pyro 100 warm-up + 100 draws (the issue's setting), BatchedHMC and NumPyro 300 + 500
(quick: 5 + 5, 60 + 60 and 30 + 30). The load average of the machine is printed next to each
run: on a shared machine, compare only numbers measured under similar load.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from bayesnets import BayesianNet, Gaussian
from inference.hmc import BatchedHMC
from priors import LayerwiseGaussian

NUM_DATA = 200
NUM_TEST = 10
HIDDEN = 50
NOISE = 0.1
DATA_SEED = 0


@dataclass
class Result:
    engine: str
    chains: int
    iterations: str
    seconds: float
    min_ess: float
    note: str = ""

    @property
    def ess_per_second(self) -> float:
        return self.min_ess / self.seconds


def make_data(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` ``[200, 1]``, ``y`` ``[200]`` and the test inputs ``[10, 1]``."""
    g = torch.Generator().manual_seed(DATA_SEED)
    x = (torch.rand(NUM_DATA, 1, generator=g, dtype=torch.float64) * 6 - 3).sort(0).values
    y = torch.sin(2 * x[:, 0]) + NOISE * torch.randn(NUM_DATA, generator=g, dtype=torch.float64)
    x_test = torch.linspace(-3, 3, NUM_TEST, dtype=torch.float64).unsqueeze(-1)
    return x.to(dtype), y.to(dtype), x_test.to(dtype)


def make_model(dtype: torch.dtype = torch.float32, device: str = "cpu") -> BayesianNet:
    net = nn.Sequential(nn.Linear(1, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1)).to(dtype=dtype, device=device)
    prior = LayerwiseGaussian(1.0)
    model = BayesianNet(net, prior, Gaussian(scale=NOISE))
    # The prior, checked: hidden N(0, 1), output weights N(0, 1/50), output bias N(0, 1).
    scales = {n: float(s) for n, s in prior.scales().items()}
    expected = {"0.weight": 1.0, "0.bias": 1.0, "2.weight": 1 / math.sqrt(HIDDEN), "2.bias": 1.0}
    assert all(abs(scales[n] - s) < 1e-6 for n, s in expected.items()), scales
    return model


def summed_min_ess(f: np.ndarray) -> float:
    """``f`` ``[chains, draws, points]`` -> min over points of the per-chain bulk ESS summed over chains."""
    import arviz as az

    total = np.zeros(f.shape[-1])
    for c in range(f.shape[0]):
        ess = az.ess(az.convert_to_dataset(f[c][None].astype(np.float64)), method="bulk")
        total += np.nan_to_num(np.asarray(ess["x"].values), nan=0.0)
    return float(total.min())


# ----------------------------------------------------------------------------- engines
def run_pyro(warmup: int, samples: int, progress: bool) -> Result:
    """Pyro's stock NUTS on the Pyro model (trace-based potential), one chain."""
    import pyro
    from pyro.infer import MCMC, NUTS

    x, y, x_test = make_data()
    model = make_model()
    pyro.set_rng_seed(1)
    start = time.perf_counter()
    mcmc = MCMC(NUTS(model), num_samples=samples, warmup_steps=warmup, num_chains=1, disable_progbar=not progress)
    mcmc.run(x, y)
    seconds = time.perf_counter() - start
    draws = {n: v.detach() for n, v in mcmc.get_samples().items()}
    f = model.predict_f(draws, x_test)[..., 0].unsqueeze(0).numpy()
    return Result("Pyro NUTS", 1, f"{warmup}+{samples}", seconds, summed_min_ess(f))


def run_batched(chains: int, warmup: int, samples: int, device: str, compile: bool, progress: bool) -> Result:
    x, y, x_test = (t.to(device) for t in make_data())
    model = make_model(device=device)
    engine = BatchedHMC(num_warmup=warmup, num_samples=samples, num_chains=chains, compile=compile, seed=1)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergences are counted in the note
        post = engine.fit(model, x, y, progress=progress)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    f = post.predict(x_test).f[..., 0].cpu().numpy()
    st = post.stats
    note = (f"T={post.attrs['trajectory_length']:.3g}, steps/iter={float(st['n_steps'].float().mean()):.0f}, "
            f"accept={float(st['acceptance_rate'].mean()):.2f}, div={int(st['diverging'].sum())}")
    name = f"BatchedHMC{' compiled' if compile else ''} ({device})"
    return Result(name, chains, f"{warmup}+{samples}", seconds, summed_min_ess(f), note)


def run_gpu(chains: int, iters: tuple[int, int], progress: bool) -> Result:
    """Compiled on the GPU, or eager (with the reason in the note) if compilation fails there."""
    try:
        return run_batched(chains, *iters, "cuda", True, progress)
    except Exception as err:  # report and fall back: the benchmark goes on
        r = run_batched(chains, *iters, "cuda", False, progress)
        r.note = f"{r.note}, compile failed: {type(err).__name__}"
        return r


def run_numpyro(chains: int, warmup: int, samples: int, progress: bool, threads: int) -> Result | None:
    """NumPyro's NUTS on the same model and data (float32, CPU), vectorised chains."""
    if threads == 1:
        # The same single core as the torch engines (set before jax starts its thread pool).
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as npd
        from numpyro.infer import MCMC, NUTS
    except ImportError:
        return None
    jax.config.update("jax_platform_name", "cpu")
    x, y, x_test = (t.numpy() for t in make_data())

    def forward(params: dict, xx: jnp.ndarray) -> jnp.ndarray:
        h = jnp.tanh(xx @ params["w1"] + params["b1"])
        return (h @ params["w2"] + params["b2"])[..., 0]

    def model(xx: jnp.ndarray, yy: jnp.ndarray | None = None) -> None:
        params = {
            "w1": numpyro.sample("w1", npd.Normal(0.0, 1.0).expand([1, HIDDEN]).to_event(2)),
            "b1": numpyro.sample("b1", npd.Normal(0.0, 1.0).expand([HIDDEN]).to_event(1)),
            "w2": numpyro.sample("w2", npd.Normal(0.0, 1 / math.sqrt(HIDDEN)).expand([HIDDEN, 1]).to_event(2)),
            "b2": numpyro.sample("b2", npd.Normal(0.0, 1.0).expand([1]).to_event(1)),
        }
        with numpyro.plate("data", xx.shape[0]):
            numpyro.sample("obs", npd.Normal(forward(params, xx), NOISE), obs=yy)

    start = time.perf_counter()
    method = "vectorized" if chains > 1 else "sequential"
    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=samples, num_chains=chains, chain_method=method,
                progress_bar=progress)
    mcmc.run(jax.random.PRNGKey(1), x, y)
    draws = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(draws)
    seconds = time.perf_counter() - start
    f = jax.vmap(jax.vmap(lambda p: forward(p, x_test)))(draws)
    return Result(f"NumPyro NUTS ({method})", chains, f"{warmup}+{samples}", seconds, summed_min_ess(np.asarray(f)))


# ------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations everywhere (rough numbers)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: the tensors are small, and on a shared machine "
                             "spinning OpenMP threads slow everything down)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["pyro", "numpyro", "eager", "compiled", "gpu"],
                        help="engines to leave out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    q = args.quick
    pyro_iters = (5, 5) if q else (100, 100)
    ours_iters = (60, 60) if q else (300, 500)
    numpyro_iters = (30, 30) if q else (300, 500)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
          f"(torch threads {torch.get_num_threads()}), torch {torch.__version__}, python {sys.version.split()[0]}"
          f"{', GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ', no GPU'}")
    print("mode:", "quick (rough numbers)" if q else "full", f"| load average at start {os.getloadavg()[0]:.1f}",
          flush=True)

    results: list[Result] = []
    jobs: list[tuple[str, Callable[[], Result | None]]] = []
    if "pyro" not in args.skip:
        jobs.append(("pyro", lambda: run_pyro(*pyro_iters, args.progress)))
    if "eager" not in args.skip:
        jobs.append(("eager", lambda: run_batched(16, *ours_iters, "cpu", False, args.progress)))
    if "compiled" not in args.skip:
        jobs.append(("compiled", lambda: run_batched(16, *ours_iters, "cpu", True, args.progress)))
    if "gpu" not in args.skip and torch.cuda.is_available():
        for chains in (256, 1024):
            jobs.append(("gpu", lambda c=chains: run_gpu(c, ours_iters, args.progress)))
    if "numpyro" not in args.skip:
        for chains in (1, 4):
            jobs.append(("numpyro", lambda c=chains: run_numpyro(c, *numpyro_iters, args.progress, args.threads)))
    for _, job in jobs:
        load = os.getloadavg()[0]
        r = job()
        if r is None:
            print("NumPyro is not installed: skipped (pip install numpyro jax)", flush=True)
            continue
        r.note = f"{r.note}{', ' if r.note else ''}load {load:.1f}->{os.getloadavg()[0]:.1f}"
        results.append(r)
        print(f"  {r.engine:<28} chains={r.chains:<5} iters={r.iterations:<9} {r.seconds:8.1f} s  "
              f"min ESS {r.min_ess:8.1f}  -> {r.ess_per_second:8.3f} ESS/s  {r.note}", flush=True)

    pyro_r = next((r for r in results if r.engine.startswith("Pyro")), None)
    numpyro_best = max((r for r in results if r.engine.startswith("NumPyro")), key=lambda r: r.ess_per_second,
                       default=None)
    print("\nESS/s of f (min over 10 test points, per-chain bulk ESS summed), wall time incl. warm-up:")
    print(f"{'engine':<28} {'chains':>6} {'iters':>9} {'sec':>8} {'ESS':>8} {'ESS/s':>9} {'x Pyro':>8} "
          f"{'x NumPyro':>10}")
    for r in results:
        vs_pyro = f"{r.ess_per_second / pyro_r.ess_per_second:8.1f}" if pyro_r else f"{'-':>8}"
        vs_np = f"{r.ess_per_second / numpyro_best.ess_per_second:10.2f}" if numpyro_best else f"{'-':>10}"
        print(f"{r.engine:<28} {r.chains:>6} {r.iterations:>9} {r.seconds:8.1f} {r.min_ess:8.1f} "
              f"{r.ess_per_second:9.3f} {vs_pyro} {vs_np}")
    if numpyro_best:
        print(f"(x NumPyro is against NumPyro's best here: {numpyro_best.engine}, {numpyro_best.chains} chain(s))")


if __name__ == "__main__":
    main()
