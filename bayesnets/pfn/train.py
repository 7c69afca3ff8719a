"""Training a PFN on a task prior (Müller et al., arXiv:2112.10510, Algorithm 1 and App. E).

Each step draws a fresh batch of datasets from the prior, splits every dataset into
``n`` train points and the rest as test points, and minimises the test points' negative
log-likelihood under the network's predictive — the prior-data NLL, which equals the
expected KL from the true posterior predictive up to a constant (paper, Corollary 1.1).

Engineering for long runs:

* AdamW, linear warm-up then cosine decay to zero, gradient-norm clipping, mixed precision
  on CUDA (bf16 autocast where supported, else fp16 with a gradient scaler).
* Checkpoints are safetensors files (never pickle): the model, every optimizer state tensor,
  and the random states (data generator, torch's CPU/CUDA generators, per rank) as tensors;
  step, loss history, scheduler, grad-scaler and settings as JSON metadata. They are written
  atomically (temporary file + rename), so a run killed at any moment resumes from its last
  checkpoint and continues bit-exactly as if it had never stopped.
* Data parallelism across GPUs/nodes with ``torch.distributed`` (DDP): launch the same
  script with ``torchrun --nproc_per_node=G script.py``; every rank draws its own datasets
  (its own generator), gradients are averaged, rank 0 writes checkpoints. ``batch_size`` is
  the global batch, split evenly across ranks. On CPU the ``gloo`` backend is used.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from bayesnets.pfn.bar import BarDistribution
from bayesnets.pfn.model import PFN, PFNConfig
from priors.tasks import TaskPrior

__all__ = ["load_checkpoint_model", "lr_factor", "sample_split", "train_pfn"]

_FORMAT = "bayesnets.pfn.checkpoint"
# Seed offset between ranks' data generators (a large prime keeps the streams apart).
_RANK_SEED_STRIDE = 1_000_003
# Datasets per chunk when drawing the prior sample the bucket borders are fitted to.
_BORDER_CHUNK = 64


def lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup_steps``, then cosine to 0 at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def sample_split(seq_len: int, num_test: int | None, min_train: int, max_train: int, weighting: str,
                 generator: torch.Generator, like: Tensor) -> tuple[int, int]:
    """Draw the number of train points ``n`` and the dataset length for one step.

    With ``num_test=None`` every dataset has ``seq_len`` points and ``n`` is drawn with weight
    ``1 / (seq_len - n)`` (``"inverse_test"``, the paper's sampler: every ``n`` gets about the
    same number of test points) or uniformly (``"uniform"``, LC-PFN's right-censoring). With
    ``num_test`` set, ``n`` is uniform and the dataset has ``n + num_test`` points, which makes
    short training sets cheap (a GP draw costs ``O(len^3)``).

    Returns:
        ``(n, length)``.
    """
    ns = torch.arange(min_train, max_train + 1, device=like.device)
    if num_test is None and weighting == "inverse_test":
        w = 1.0 / (seq_len - ns).to(torch.float64)
    else:
        w = torch.ones(len(ns), dtype=torch.float64, device=like.device)
    n = int(ns[torch.multinomial(w, 1, generator=generator)])
    return n, (seq_len if num_test is None else n + num_test)


def _dist() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``, or ``(0, 1, 0)`` without an initialised process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return (torch.distributed.get_rank(), torch.distributed.get_world_size(),
                int(os.environ.get("LOCAL_RANK", "0")))
    return 0, 1, 0


def _amp_settings(device: torch.device, amp: bool) -> tuple[torch.dtype | None, bool]:
    """Autocast dtype (None = off) and whether a gradient scaler is needed."""
    if not amp or device.type != "cuda":
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def _loss(model: PFN, logits: Tensor, target: Tensor) -> Tensor:
    """Mean test-point NLL (bar distribution or cross-entropy), computed in float32."""
    logits = logits.float()
    if model.regression:
        return -BarDistribution(logits, model.borders.float()).log_prob(target.float()).mean()
    return F.cross_entropy(logits.flatten(0, 1), target.flatten().long())


def _rng_vector(generator: torch.Generator, device: torch.device) -> Tensor:
    """This rank's random states as one uint8 vector: data generator, CPU RNG, (CUDA RNG)."""
    parts = [generator.get_state().cpu(), torch.get_rng_state()]
    if device.type == "cuda":
        parts.append(torch.cuda.get_rng_state(device))
    return torch.cat(parts)


def _set_rng_vector(vec: Tensor, generator: torch.Generator, device: torch.device) -> None:
    n_gen = generator.get_state().numel()
    n_cpu = torch.get_rng_state().numel()
    generator.set_state(vec[:n_gen].clone())
    torch.set_rng_state(vec[n_gen:n_gen + n_cpu].clone())
    if device.type == "cuda":
        torch.cuda.set_rng_state(vec[n_gen + n_cpu:].clone(), device)


def _gather_rng(vec: Tensor, world: int, device: torch.device) -> list[Tensor]:
    if world == 1:
        return [vec]
    comm_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    local = vec.to(comm_device)
    out = [torch.empty_like(local) for _ in range(world)]
    torch.distributed.all_gather(out, local)
    return [t.cpu() for t in out]


def _write_checkpoint(path: Path, model: PFN, optimizer: torch.optim.Optimizer, scheduler: Any,
                      scaler: Any, rng: list[Tensor], step: int, losses: list[float], meta: dict[str, Any]) -> None:
    tensors: dict[str, Tensor] = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if not isinstance(value, Tensor):
                raise TypeError(f"optimizer state {idx}.{key} is not a tensor; cannot checkpoint it")
            tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
    for r, vec in enumerate(rng):
        tensors[f"rng.rank{r}"] = vec.contiguous()
    tensors["history.loss"] = torch.tensor(losses, dtype=torch.float64)
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    metadata = {
        "format": _FORMAT, "step": str(step),
        "param_groups": json.dumps(opt["param_groups"]),
        "scheduler": json.dumps(sched),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None else {}),
        **{k: json.dumps(v) for k, v in meta.items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # atomic: a kill leaves either the old or the new checkpoint


def _read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a PFN training checkpoint (format {meta.get('format')!r})")
    return load_file(str(path)), meta


def load_checkpoint_model(path: str | Path) -> PFN:
    """The model stored in a training checkpoint (e.g. to evaluate a run in progress)."""
    tensors, meta = _read_checkpoint(Path(path))
    model = PFN(PFNConfig.from_dict(json.loads(meta["model_config"])))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    return model


def train_pfn(prior: TaskPrior, model_config: PFNConfig | dict[str, Any], steps: int, *, batch_size: int = 64,
              seq_len: int = 100, num_test: int | None = None, min_train: int = 1, max_train: int | None = None,
              split_weighting: str = "inverse_test", lr: float = 1e-3, weight_decay: float = 0.0,
              warmup_steps: int | None = None, clip: float = 1.0, amp: bool = True, seed: int = 0,
              border_datasets: int = 512, checkpoint_path: str | Path | None = None, checkpoint_every: int = 0,
              resume: bool = True, progress: bool = True,
              callback: Callable[[int, float], None] | None = None) -> PFN:
    """Train a PFN on datasets drawn from ``prior``.

    The model and the data live on the prior's device (``prior.to("cuda")``); under DDP each
    rank uses ``cuda:LOCAL_RANK`` when the prior is on CUDA.

    Args:
        prior: the task prior datasets are drawn from.
        model_config: :class:`PFNConfig` (or its dict); ``max_features`` must cover the prior's.
        steps: optimizer steps.
        batch_size: datasets per step (global; split evenly across DDP ranks).
        seq_len: points per dataset (with ``num_test=None``), else the most train points plus
            ``num_test`` bound ``max_train``.
        num_test: fixed number of test points per dataset, or ``None`` (see :func:`sample_split`).
        min_train, max_train: range of train-set sizes ``n`` (default max: all but the test points).
        split_weighting: ``"inverse_test"`` (paper) or ``"uniform"``.
        lr, weight_decay: AdamW settings (peak learning rate).
        warmup_steps: linear warm-up length (default: 10% of ``steps``).
        clip: max gradient norm.
        amp: mixed precision on CUDA (bf16 where supported, else fp16 + grad scaler).
        seed: seeds model init, bucket borders and the data stream (rank ``r`` uses
            ``seed + r * 1_000_003``); the caller's global random state is left untouched.
        border_datasets: prior datasets whose targets the bucket borders are fitted to.
        checkpoint_path: safetensors checkpoint file; written every ``checkpoint_every`` steps
            and at the end.
        checkpoint_every: checkpoint period in steps (0: only at the end).
        resume: continue from ``checkpoint_path`` when it exists (settings must match).
        progress: tqdm bar with the running loss (rank 0 only).
        callback: ``callback(step, loss)`` after every step (and after its checkpoint).

    Returns:
        The trained :class:`PFN` (unwrapped, in eval mode) with ``pfn.training_losses``
        (``[steps]`` per-step losses of rank 0) and a ``pfn.metadata["training"]`` record.
    """
    if not isinstance(prior, TaskPrior):
        raise TypeError(f"prior must be a TaskPrior, got {type(prior).__name__}")
    config = model_config if isinstance(model_config, PFNConfig) else PFNConfig.from_dict(dict(model_config))
    if config.max_features < prior.max_features:
        raise ValueError(f"model_config.max_features ({config.max_features}) < prior.max_features "
                         f"({prior.max_features})")
    if (config.num_classes is None) != (prior.task == "regression"):
        raise ValueError(f"a {prior.task} prior needs "
                         f"{'num_classes=None' if prior.task == 'regression' else 'num_classes set'} in model_config")
    rank, world, local_rank = _dist()
    steps, batch_size, seq_len = int(steps), int(batch_size), int(seq_len)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size % world or batch_size < world:
        raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of the world size ({world})")
    if split_weighting not in ("inverse_test", "uniform"):
        raise ValueError(f"split_weighting must be 'inverse_test' or 'uniform', got {split_weighting!r}")
    if num_test is not None and int(num_test) < 1:
        raise ValueError(f"num_test must be >= 1 or None, got {num_test}")
    top = seq_len - 1 if num_test is None else seq_len - int(num_test)
    max_train = top if max_train is None else int(max_train)
    if not 1 <= int(min_train) <= max_train <= top:
        raise ValueError(f"need 1 <= min_train ({min_train}) <= max_train ({max_train}) <= {top}")
    warmup_steps = max(1, steps // 10) if warmup_steps is None else max(1, int(warmup_steps))

    device = prior.device
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        prior = prior.to(device)
    local_batch = batch_size // world
    settings = dict(steps=steps, batch_size=batch_size, seq_len=seq_len, num_test=num_test, min_train=int(min_train),
                    max_train=max_train, split_weighting=split_weighting, lr=lr, weight_decay=weight_decay,
                    warmup_steps=warmup_steps, clip=clip, amp=amp, seed=seed, border_datasets=border_datasets)
    amp_dtype, needs_scaler = _amp_settings(device, amp)
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    cuda_devices = [device] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed + rank * _RANK_SEED_STRIDE)  # dropout stream; model init is re-seeded below
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            model = PFN(config).to(device)
        generator = torch.Generator(device=device).manual_seed(seed + rank * _RANK_SEED_STRIDE)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup_steps))
        scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
        start, losses, seconds_before = 0, [], 0.0

        if path is not None and resume and path.exists():
            tensors, meta = _read_checkpoint(path)
            saved = json.loads(meta["settings"])
            if saved != json.loads(json.dumps(settings)) or int(json.loads(meta["world_size"])) != world:
                raise ValueError(f"checkpoint {path} was written with different settings or world size; "
                                 f"saved {saved} (world {meta['world_size']}), now {settings} (world {world}); "
                                 "use resume=False or another checkpoint_path")
            model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
            state: dict[int, dict[str, Tensor]] = {}
            for k, v in tensors.items():
                if k.startswith("optim."):
                    _, idx, key = k.split(".", 2)
                    state.setdefault(int(idx), {})[key] = v
            optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
            scheduler.load_state_dict({**json.loads(meta["scheduler"]), "lr_lambdas": [None]})
            if scaler is not None:
                scaler.load_state_dict(json.loads(meta["scaler"]))
            _set_rng_vector(tensors[f"rng.rank{rank}"], generator, device)
            start = int(meta["step"])
            losses = tensors["history.loss"].tolist()
            seconds_before = float(json.loads(meta["seconds"]))
        else:
            # Borders and standardisations from a prior sample drawn with the same seed on every rank.
            border_gen = torch.Generator(device=device).manual_seed(seed)
            xs, ys = [], []
            for i in range(0, max(1, border_datasets), _BORDER_CHUNK):
                x, y = prior.sample(min(_BORDER_CHUNK, border_datasets - i), seq_len, generator=border_gen)
                xs.append(x.flatten(0, 1).flatten())  # feature counts differ between chunks
                ys.append(y.flatten())
            model.fit_to_prior_sample(torch.cat(xs), torch.cat(ys))

        net: nn.Module = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
        model.train()
        meta_common = {"settings": settings, "world_size": world, "model_config": asdict(config),
                       "prior": prior.config()}
        bar = tqdm(total=steps, initial=start, disable=not progress or rank != 0, desc="train_pfn")
        t0 = time.perf_counter()
        running = None
        for step in range(start, steps):
            n, length = sample_split(seq_len, num_test, int(min_train), max_train, split_weighting, generator,
                                     prior._anchor)
            x, y = prior.sample(local_batch, length, generator=generator)
            autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                        else contextlib.nullcontext())
            with autocast:
                logits = net(x[:, :n], y[:, :n], x[:, n:])
            loss = _loss(model, logits, y[:, n:])
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            losses.append(value)
            running = value if running is None else 0.98 * running + 0.02 * value
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            done = step + 1
            if path is not None and (done == steps or (checkpoint_every and done % checkpoint_every == 0)):
                rng = _gather_rng(_rng_vector(generator, device), world, device)
                if rank == 0:
                    seconds = seconds_before + time.perf_counter() - t0
                    _write_checkpoint(path, model, optimizer, scheduler, scaler, rng, done, losses,
                                      {**meta_common, "seconds": seconds})
                if world > 1:
                    torch.distributed.barrier()
            if callback is not None:
                callback(done, value)
        bar.close()
    seconds = seconds_before + time.perf_counter() - t0
    model.eval()
    model.training_losses = torch.tensor(losses)
    tail = losses[-max(1, len(losses) // 100):]
    model.metadata = {"training": {**settings, "world_size": world, "device": str(device),
                                   "final_loss": sum(tail) / len(tail), "seconds": seconds,
                                   "datasets": steps * batch_size, "prior": prior.config()}}
    return model

