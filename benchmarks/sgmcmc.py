"""Gradient steps per second of our SGHMC against the `posteriors` library's SGHMC (issue 4).

The model: a 4-50-50-1 tanh network on 2,000 points of ``sin(x . w) + N(0, 0.1^2)``,
``LayerwiseGaussian(1.0)`` weight priors (``N(0, 1/fan_in)`` weights, ``N(0, 1)`` biases),
Gaussian noise 0.1 known, minibatches of 100 (the likelihood rescaled by N / B = 20),
float32, CPU. Every chain of both contenders starts from its own prior draw.

Contenders, timed in this process with the same data, network and SGHMC settings
(``lr = eps = 2e-5``, friction ``alpha = C = 500``, temperature 1; posteriors uses the same
``(eps, C)`` parameters as :class:`~inference.sgmcmc.SGHMC`; the step is small because
posteriors updates the position with the *old* momentum, an explicit-Euler step that is
stable only while ``eps * lambda_max < C``: at ``eps = 1e-4, C = 100`` some of its chains
diverged on this problem while ours, a symplectic-Euler step, did not):

* ``ours``: ``SGHMC(...).fit(model, x, y)`` end to end -- minibatch sampling, the vectorised
  log density, the update, draws kept every 10 steps, building the ``Posterior``.
* ``posteriors``: ``posteriors.sgmcmc.sghmc.build(log_post, lr, alpha)`` and a Python loop of
  ``transform.update(state, batch)`` (the loop of its README), with the minibatch drawn by
  ``torch.randperm`` each epoch. Its log posterior is written as a posteriors user would
  (``functional_call`` + ``Normal.log_prob`` + ``posteriors.diag_normal_log_prob``); a second
  row feeds it our ``BayesianNet.log_density`` instead, so both run the same model code and
  only the samplers differ. It is timed with ``inplace=False`` (the default) and
  ``inplace=True``; the faster one is the peer.
* 8 chains: ours vectorised with ``vmap`` in one ``fit``; posteriors has no multi-chain
  runner (users must vmap its update themselves, posteriors#146), so its 8 chains run one
  after another.

Each contender is timed ``--repeats`` times, interleaved (ABAB...) so machine load hits all
alike; the median is reported. Print: steps per second and ratio ours / posteriors. Both
run on ``--threads`` torch threads (default 1).

Usage::

    python benchmarks/sgmcmc.py             # 2,000 steps per run, 3 repeats
    python benchmarks/sgmcmc.py --quick     # 300 steps, 2 repeats
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from bayesnets import BayesianNet, Gaussian
from inference.sgmcmc import SGHMC
from priors import LayerwiseGaussian

NUM_DATA = 2000
NUM_FEATURES = 4
HIDDEN = 50
NOISE = 0.1
BATCH = 100
STEP_SIZE = 2e-5
FRICTION = 500.0
THINNING = 10
DATA_SEED = 0


def make_problem() -> tuple[nn.Module, BayesianNet, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randn(NUM_DATA, NUM_FEATURES, generator=gen)
    w = torch.randn(NUM_FEATURES, generator=gen)
    y = torch.sin(x @ w) + NOISE * torch.randn(NUM_DATA, generator=gen)
    net = nn.Sequential(nn.Linear(NUM_FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                        nn.Linear(HIDDEN, 1))
    model = BayesianNet(net, LayerwiseGaussian(1.0), Gaussian(scale=NOISE))
    return net, model, x, y


def run_ours(model: BayesianNet, x: Tensor, y: Tensor, steps: int, chains: int) -> float:
    """Seconds for ``steps`` SGHMC steps of ``chains`` vectorised chains, end to end."""
    engine = SGHMC(step_size=STEP_SIZE, friction=FRICTION, num_warmup=0, num_samples=steps // THINNING,
                   thinning=THINNING, num_chains=chains, batch_size=BATCH, seed=0)
    start = time.perf_counter()
    engine.fit(model, x, y, progress=False)
    return time.perf_counter() - start


def posteriors_log_post(net: nn.Module, model: BayesianNet, use_ours: bool) -> Callable:
    import posteriors

    scale = NUM_DATA / BATCH
    if use_ours:
        def log_post(params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            return model.log_density(params, batch[0], batch[1], num_data=NUM_DATA), torch.tensor(0.0)
        return log_post

    sd = {n: (1.0 / p.shape[1] ** 0.5 if p.dim() > 1 else 1.0) for n, p in net.named_parameters()}

    def log_post(params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        xb, yb = batch
        f = functional_call(net, params, (xb,)).squeeze(-1)
        ll = torch.distributions.Normal(f, NOISE).log_prob(yb).sum() * scale
        return ll + posteriors.diag_normal_log_prob(params, sd_diag=sd), f

    return log_post


def run_posteriors(net: nn.Module, model: BayesianNet, x: Tensor, y: Tensor, steps: int, chains: int,
                   use_ours: bool, inplace: bool) -> float:
    """Seconds for ``steps`` posteriors SGHMC updates per chain, chains one after another."""
    import posteriors

    log_post = posteriors_log_post(net, model, use_ours)
    transform = posteriors.sgmcmc.sghmc.build(log_post, lr=STEP_SIZE, alpha=FRICTION)
    torch.manual_seed(0)
    inits = [model.init_params(x) for _ in range(chains)]  # prior draws, as ours starts from
    start = time.perf_counter()
    finite = True
    for init in inits:
        state = transform.init(init, momenta=0.0)
        done = 0
        while done < steps:
            perm = torch.randperm(NUM_DATA)
            for i in range(NUM_DATA // BATCH):
                if done == steps:
                    break
                idx = perm[i * BATCH:(i + 1) * BATCH]
                state, _ = transform.update(state, (x[idx], y[idx]), inplace=inplace)
                done += 1
        finite = finite and all(bool(torch.isfinite(v).all()) for v in state.params.values())
    seconds = time.perf_counter() - start
    if not finite:
        raise FloatingPointError("a posteriors chain became non-finite: the timing would not be meaningful")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 steps, 2 repeats")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: a small net gains nothing from more, and on a shared "
                             "machine extra threads spin against other jobs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, repeats = (300, 2) if args.quick else (args.steps, args.repeats)
    steps = max(THINNING, steps - steps % THINNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # tensordict's notices on import
        try:
            import posteriors  # noqa: F401
        except ImportError as err:
            raise SystemExit("this benchmark needs `pip install posteriors`") from err
    net, model, x, y = make_problem()
    d = sum(p.numel() for p in net.parameters())
    print(f"SGHMC on a {NUM_FEATURES}-{HIDDEN}-{HIDDEN}-1 tanh BNN ({d} weights), N={NUM_DATA}, batch {BATCH}, "
          f"{steps} steps per chain, float32, CPU ({torch.get_num_threads()} torch threads, {platform.processor()})")
    contenders: dict[str, Callable[[], float]] = {
        "ours, 1 chain": lambda: run_ours(model, x, y, steps, 1),
        "posteriors, 1 chain, inplace=False": lambda: run_posteriors(net, model, x, y, steps, 1, False, False),
        "posteriors, 1 chain, inplace=True": lambda: run_posteriors(net, model, x, y, steps, 1, False, True),
        "posteriors + our log_density, 1 chain": lambda: run_posteriors(net, model, x, y, steps, 1, True, True),
        "ours, 8 chains (vmap)": lambda: run_ours(model, x, y, steps, 8),
        "posteriors, 8 chains (sequential)": lambda: run_posteriors(net, model, x, y, steps, 8, False, True),
    }
    # Warm-up (imports, first-call overheads), then interleaved repeats.
    run_ours(model, x, y, THINNING * 2, 1)
    run_posteriors(net, model, x, y, 20, 1, False, True)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(fn())
    chains = {k: (8 if "8 chains" in k else 1) for k in contenders}
    rate = {k: chains[k] * steps / statistics.median(v) for k, v in times.items()}
    print(f"{'contender':42s} {'chain-steps/s':>14s}")
    for k, r in rate.items():
        print(f"{k:42s} {r:14.1f}")
    peer1 = max(rate["posteriors, 1 chain, inplace=False"], rate["posteriors, 1 chain, inplace=True"])
    print(f"ratio, 1 chain (ours / best posteriors):                {rate['ours, 1 chain'] / peer1:.2f}")
    print(f"ratio, 1 chain, same log density (ours / posteriors):   "
          f"{rate['ours, 1 chain'] / rate['posteriors + our log_density, 1 chain']:.2f}")
    print(f"ratio, 8 chains (ours vmap / posteriors sequential):    "
          f"{rate['ours, 8 chains (vmap)'] / rate['posteriors, 8 chains (sequential)']:.2f}")


if __name__ == "__main__":
    main()
