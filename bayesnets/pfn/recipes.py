"""Recipes that train the PFN weights shipped in ``bayesnets/pfn/weights/``.

Run on one CPU or GPU::

    python -m bayesnets.pfn.recipes gp --size cpu               # the shipped small GP-PFN
    python -m bayesnets.pfn.recipes gp --size gpu --device cuda  # a paper-sized one (one GPU)
    python -m bayesnets.pfn.recipes lc --size cpu --threads 1   # the shipped small LC-PFN (lcpfn.safetensors)

or data-parallel on several GPUs / nodes (each rank draws its own datasets)::

    torchrun --nproc_per_node=8 -m bayesnets.pfn.recipes gp --size gpu --device cuda

A killed run resumes from its checkpoint when started again with the same arguments.
Each recipe is a :class:`~bayesnets.pfn.train.PFNTrainer` run. The result is written as ``<out>``
(safetensors, float16 by default to keep the package small) with the training record (steps,
device, final loss, wall time) in its metadata.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bayesnets.pfn.model import PFNConfig
from bayesnets.pfn.train import PFNTrainer
from priors.tasks import GPHyperPrior, LearningCurvePrior, TaskPrior

__all__ = ["RECIPES", "Recipe", "gp_prior"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def gp_prior() -> GPHyperPrior:
    """The GP hyperprior of the shipped ``"gp"`` PFN: 1-5 input dims on ``[0, 1]^d``, ARD Matérn-5/2,
    ``lengthscale ~ Gamma(3, 6)`` (paper), ``outputscale ~ Gamma(2, 2)`` (the paper's concentration,
    rate chosen for mean 1 so standardised targets are in range), ``noise ~ Gamma(1.1, 50)``
    (BoTorch's concentration, mean 0.022), noise floor 1e-4."""
    return GPHyperPrior(max_features=5, min_features=1, lengthscale_prior=(3.0, 6.0), outputscale_prior=(2.0, 2.0),
                        noise_prior=(1.1, 50.0), min_noise=1e-4, kernel="matern52")


@dataclass
class Recipe:
    """A prior, an architecture, training settings (keyword arguments of
    :class:`~bayesnets.pfn.train.PFNTrainer`) and the shipped file's name (default: the recipe's name)."""

    prior: Any
    model: PFNConfig
    train: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None


RECIPES: dict[str, dict[str, Recipe]] = {
    "gp": {
        # Small enough to train on 2 shared CPU cores in well under an hour (see docs/pfn.md).
        "cpu": Recipe(gp_prior, PFNConfig(max_features=5, emsize=64, nlayers=4, nhead=4, nhid=128, num_buckets=500),
                      dict(num_steps=5000, batch_size=16, seq_len=220, num_test=20, min_train=1, lr=2e-3,
                           checkpoint_every=250)),
        # The paper's GP-PFN size (emsize 512, 6 layers, 4 heads, nhid 1024, 1000 buckets) for one or more GPUs.
        "gpu": Recipe(gp_prior, PFNConfig(max_features=5, emsize=512, nlayers=6, nhead=4, nhid=1024,
                                          num_buckets=1000),
                      dict(num_steps=40_000, batch_size=256, seq_len=260, num_test=40, min_train=1, lr=3e-4,
                           checkpoint_every=1000)),
    },
    # LC-PFN (arXiv:2310.20447): curves of 100 epochs, cut-off uniform in 1..99 (right-censoring).
    "lc": {
        # The paper's small architecture (3 layers, emsize 128: its P1) on 128k curves (the shipped file:
        # 57 min of one shared CPU core, final loss -2.25; the paper trains on 10M curves).
        "cpu": Recipe(LearningCurvePrior, PFNConfig(max_features=1, emsize=128, nlayers=3, nhead=4, nhid=256,
                                                    num_buckets=1000),
                      dict(num_steps=4000, batch_size=32, seq_len=100, num_test=None, min_train=1,
                           split_weighting="uniform", lr=1e-3, border_datasets=10_000, checkpoint_every=250),
                      weights="lcpfn"),
        # The paper's default model (P3: emsize 512, 12 layers, nhid 1024, 1000 buckets) on its 10M curves:
        # 100k steps x 100 curves, lr 1e-4, cosine with 25% linear warm-up, borders from 10k prior curves.
        "gpu": Recipe(LearningCurvePrior, PFNConfig(max_features=1, emsize=512, nlayers=12, nhead=4, nhid=1024,
                                                    num_buckets=1000),
                      dict(num_steps=100_000, batch_size=100, seq_len=100, num_test=None, min_train=1,
                           split_weighting="uniform", lr=1e-4, warmup_steps=25_000, border_datasets=10_000,
                           checkpoint_every=1000),
                      weights="lcpfn"),
    },
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--size", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (each DDP rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--batch-size", type=int, default=None, help="override the recipe's global batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default ./<name>-<size>.ckpt.safetensors)")
    parser.add_argument("--out", default=None, help="weights file (default: the recipe's in bayesnets/pfn/weights/)")
    parser.add_argument("--float32", action="store_true", help="store float32 weights (default float16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
        if args.device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    recipe = RECIPES[args.name][args.size]
    prior: TaskPrior = recipe.prior().to(args.device)
    kwargs = dict(recipe.train)
    if args.steps:
        kwargs["num_steps"] = args.steps
    if args.batch_size:
        kwargs["batch_size"] = args.batch_size
    out = Path(args.out) if args.out else WEIGHTS_DIR / f"{recipe.weights or args.name}.safetensors"
    ckpt = Path(args.checkpoint) if args.checkpoint else Path(f"{args.name}-{args.size}.ckpt.safetensors")
    fit = PFNTrainer(seed=args.seed, checkpoint_path=ckpt, **kwargs).fit(recipe.model, prior)
    rank = torch.distributed.get_rank() if distributed else 0
    if rank == 0:
        model = fit.module
        record = dict(model.metadata["training"])
        record.update(recipe=f"{args.name}/{args.size}", threads=torch.get_num_threads(),
                      command="python -m bayesnets.pfn.recipes " + " ".join(argv if argv is not None else
                                                                            __import__("sys").argv[1:]))
        model.cpu().save(out, metadata={"training": record}, dtype=None if args.float32 else torch.float16)
        print(f"wrote {out}: final loss {record['final_loss']:.4f}, {record['seconds']:.0f} s, "
              f"{record['datasets']} datasets on {record['device']} x{record['world_size']}")
    if distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
