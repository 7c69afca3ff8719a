"""Shipped GP-PFN vs exact GP, fitted-hyperparameter GPs and NUTS (PFN paper §5.2, arXiv:2112.10510).

Fresh datasets from the shipped PFN's GP hyperprior (1-5 input dims, n training points, 10
test points each); per cell the mean test NLL of

* ``exact``  — GP posterior predictive with the true hyperparameters (the best possible),
* ``pfn``    — ``PFN.pretrained("gp")``, one forward pass per dataset,
* ``mle2``   — GP with hyperparameters maximising the marginal likelihood (MLE-II, L-BFGS via BoTorch),
* ``map2``   — the same with the true hyperpriors added (type-II MAP; what the PFN paper's
  "MLE-II" baseline does through BoTorch's ``SingleTaskGP`` priors),
* ``nuts``   — NUTS over the hyperparameters (our ``inference.hmc.NUTS`` on a Pyro GP model),
  predictive = average of the GP predictives of the draws; run on the first ``--nuts-datasets``
  datasets of each cell only (the ``pfn@nuts`` column is the PFN on the same datasets),

and the wall time per dataset of each (the PFN is timed one dataset at a time, as NUTS is).

    python benchmarks/pfn.py            # full table
    python benchmarks/pfn.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import gpytorch
import pyro
import pyro.distributions as dist
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models.gpytorch import GPyTorchModel
from torch import Tensor

from bayesnets.pfn import PFN
from inference.hmc import NUTS
from priors.tasks import GPHyperPrior
from priors.tasks.gp import gp_predictive, kernel_matrix

NUM_TEST = 10


def gaussian_nll(mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
    return 0.5 * (torch.log(2 * math.pi * var) + (y - mean) ** 2 / var)


class _GP(gpytorch.models.ExactGP, GPyTorchModel):
    _num_outputs = 1

    def __init__(self, x: Tensor, y: Tensor, prior: GPHyperPrior | None) -> None:
        lik = gpytorch.likelihoods.GaussianLikelihood(
            noise_prior=gpytorch.priors.GammaPrior(*prior.noise_prior) if prior else None,
            noise_constraint=gpytorch.constraints.GreaterThan(1e-4))
        super().__init__(x, y, lik)
        self.mean_module = gpytorch.means.ZeroMean()
        base = gpytorch.kernels.MaternKernel(
            nu=2.5, ard_num_dims=x.shape[-1],
            lengthscale_prior=gpytorch.priors.GammaPrior(*prior.lengthscale_prior) if prior else None)
        self.covar_module = gpytorch.kernels.ScaleKernel(
            base, outputscale_prior=gpytorch.priors.GammaPrior(*prior.outputscale_prior) if prior else None)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def fitted_gp_nll(x: Tensor, y: Tensor, tx: Tensor, ty: Tensor, prior: GPHyperPrior | None) -> Tensor:
    """Fit hyperparameters by L-BFGS on the (penalised) marginal likelihood; NLL of the test points."""
    model = _GP(x, y, prior).to(x)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    model.eval()
    with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
        pred = model.likelihood(model(tx))
    return gaussian_nll(pred.mean, pred.variance, ty)


def nuts_nll(x: Tensor, y: Tensor, tx: Tensor, ty: Tensor, prior: GPHyperPrior, warmup: int, samples: int,
             seed: int) -> Tensor:
    """NUTS over (lengthscale, outputscale, noise); mixture-of-GPs predictive NLL of the test points."""
    d = x.shape[-1]

    def gam(spec: tuple[float, float]) -> dist.Gamma:
        return dist.Gamma(torch.tensor(spec[0], dtype=x.dtype), torch.tensor(spec[1], dtype=x.dtype))

    def model(xx: Tensor, yy: Tensor | None = None) -> None:
        ls = pyro.sample("lengthscale", gam(prior.lengthscale_prior).expand([d]).to_event(1))
        os_ = pyro.sample("outputscale", gam(prior.outputscale_prior))
        noise = pyro.sample("noise", gam(prior.noise_prior)).clamp_min(prior.min_noise)
        cov = kernel_matrix(xx[None], xx[None], ls[None], os_.reshape(1), prior.kernel)[0]
        cov = cov + noise * torch.eye(xx.shape[0], dtype=xx.dtype)
        pyro.sample("obs", dist.MultivariateNormal(torch.zeros_like(yy), covariance_matrix=cov), obs=yy)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = NUTS(num_warmup=warmup, num_samples=samples, num_chains=1, seed=seed).fit(model, x, y, progress=False)
    ls = post.samples["lengthscale"].reshape(-1, d)
    os_ = post.samples["outputscale"].reshape(-1)
    noise = post.samples["noise"].reshape(-1).clamp_min(prior.min_noise)
    s = ls.shape[0]
    mean, var = gp_predictive(x.expand(s, *x.shape), y.expand(s, -1), tx.expand(s, *tx.shape), ls, os_, noise,
                              prior.kernel)
    logp = -gaussian_nll(mean, var, ty.expand(s, -1))
    return -(torch.logsumexp(logp, 0) - math.log(s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--dims", default="1,2,3,4,5")
    parser.add_argument("--ns", default="10,50,200")
    parser.add_argument("--datasets", type=int, default=20, help="datasets per (dim, n) cell")
    parser.add_argument("--nuts-datasets", type=int, default=2, help="datasets per cell that also get NUTS")
    parser.add_argument("--nuts-dims", default="1,3,5", help="dims whose cells get NUTS")
    parser.add_argument("--nuts-ns", default="10,50", help="n whose cells get NUTS")
    parser.add_argument("--nuts-warmup", type=int, default=100)
    parser.add_argument("--nuts-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.dims, args.ns, args.datasets, args.nuts_datasets = "1,3", "10,50", 4, 1
        args.nuts_dims, args.nuts_ns, args.nuts_warmup, args.nuts_samples = "1", "10", 30, 30
    torch.set_num_threads(args.threads)

    pfn = PFN.pretrained("gp")
    prior = GPHyperPrior(**{k: v for k, v in pfn.metadata["training"]["prior"].items() if k != "class"})
    dims = [int(v) for v in args.dims.split(",")]
    ns = [int(v) for v in args.ns.split(",")]
    nuts_cells = {(d, n) for d in map(int, args.nuts_dims.split(",")) for n in map(int, args.ns.split(","))
                  if n in map(int, args.nuts_ns.split(","))}
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    head = (f"{'d':>2} {'n':>4} | {'exact':>7} {'pfn':>7} {'mle2':>7} {'map2':>7} | {'nuts':>7} {'pfn@nuts':>8} |"
            f" {'t_pfn ms':>8} {'t_mle2 s':>8} {'t_map2 s':>8} {'t_nuts s':>8} {'nuts/pfn':>9}")
    print(head)
    print("-" * len(head))
    for d in dims:
        for n in ns:
            x, y, h = prior.sample_with_hyperparameters(args.datasets, n + NUM_TEST, d, gen)
            x, y = x.double(), y.double()
            h = {k: v.double() for k, v in h.items()}
            trx, try_, tex, tey = x[:, :n], y[:, :n], x[:, n:], y[:, n:]
            mean, var = gp_predictive(trx, try_, tex, h["lengthscale"], h["outputscale"], h["noise"], prior.kernel)
            exact = gaussian_nll(mean, var, tey).mean(-1)
            pfn_nll, t_pfn = [], 0.0
            with torch.no_grad():
                pfn.predict(trx[0].float(), try_[0].float(), tex[0].float())  # warm-up
                for i in range(args.datasets):
                    t0 = time.perf_counter()
                    pred = pfn.predict(trx[i].float(), try_[i].float(), tex[i].float())
                    t_pfn += time.perf_counter() - t0
                    pfn_nll.append(-pred.log_prob(tey[i].float()).double().mean())
            pfn_nll = torch.stack(pfn_nll)
            fits = {}
            for name, p in (("mle2", None), ("map2", prior)):
                t0 = time.perf_counter()
                fits[name] = torch.stack([fitted_gp_nll(trx[i], try_[i], tex[i], tey[i], p).mean()
                                          for i in range(args.datasets)])
                fits[name + "_s"] = (time.perf_counter() - t0) / args.datasets
            row = dict(d=d, n=n, datasets=args.datasets, exact=float(exact.mean()), pfn=float(pfn_nll.mean()),
                       mle2=float(fits["mle2"].mean()), map2=float(fits["map2"].mean()),
                       t_pfn_s=t_pfn / args.datasets, t_mle2_s=fits["mle2_s"], t_map2_s=fits["map2_s"])
            nuts_txt = f"{'':>7} {'':>8} |"
            tail = f" {'':>8} {'':>9}"
            if (d, n) in nuts_cells:
                k = min(args.nuts_datasets, args.datasets)
                t0 = time.perf_counter()
                nn = torch.stack([nuts_nll(trx[i], try_[i], tex[i], tey[i], prior, args.nuts_warmup,
                                           args.nuts_samples, args.seed + i).mean() for i in range(k)])
                t_nuts = (time.perf_counter() - t0) / k
                row.update(nuts=float(nn.mean()), pfn_at_nuts=float(pfn_nll[:k].mean()), nuts_datasets=k,
                           t_nuts_s=t_nuts, nuts_over_pfn=t_nuts / row["t_pfn_s"])
                nuts_txt = f"{row['nuts']:7.3f} {row['pfn_at_nuts']:8.3f} |"
                tail = f" {t_nuts:8.2f} {row['nuts_over_pfn']:9.0f}"
            rows.append(row)
            print(f"{d:>2} {n:>4} | {row['exact']:7.3f} {row['pfn']:7.3f} {row['mle2']:7.3f} {row['map2']:7.3f} | "
                  f"{nuts_txt} {1e3 * row['t_pfn_s']:8.2f} {row['t_mle2_s']:8.3f} {row['t_map2_s']:8.3f}{tail}",
                  flush=True)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("exact", "pfn", "mle2", "map2")}
    speed = [r["nuts_over_pfn"] for r in rows if "nuts_over_pfn" in r]
    print(f"\nmean NLL over cells: exact {mean['exact']:.3f}  pfn {mean['pfn']:.3f}  mle2 {mean['mle2']:.3f}  "
          f"map2 {mean['map2']:.3f}")
    if speed:
        print(f"NUTS / PFN wall time per dataset: min {min(speed):.0f}x, median {sorted(speed)[len(speed) // 2]:.0f}x "
              f"(goal >= 1000x); PFN NLL <= MLE-II NLL in {sum(r['pfn'] <= r['mle2'] for r in rows)}/{len(rows)} "
              f"cells, <= MAP-II in {sum(r['pfn'] <= r['map2'] for r in rows)}/{len(rows)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
