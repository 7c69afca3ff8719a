"""Training checkpoints: safetensors files (never pickle) from which a run resumes bit-exactly.

A checkpoint holds everything the next step depends on: the state of every trained module,
every optimiser state tensor, the learning-rate schedule, the AMP gradient scaler, every
random stream of every rank (:func:`inference.seeding.rng_state`), the step, the per-step
history and the settings the run was started with (a resume with other settings is refused).
Tensors go into the file; everything else (param groups, schedule, scaler, step, settings,
optimiser scalars such as L-BFGS's iteration counts) into its JSON metadata.

Files are written atomically: to ``<name>.tmp`` beside the target, then renamed over it, so a
run killed at any moment leaves either the previous checkpoint or the new one, never half of
one. A ``.tmp`` left by a killed run is removed when the next run opens the checkpoint.
Under ``torch.distributed`` every rank's random state is gathered and rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

__all__ = ["FORMAT", "Checkpoint", "distributed_context", "read_checkpoint"]

#: ``format`` entry of a checkpoint's metadata.
FORMAT = "bayesnets.training.checkpoint"


def distributed_context() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``, or ``(0, 1, 0)`` without an initialised process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return (torch.distributed.get_rank(), torch.distributed.get_world_size(),
                int(os.environ.get("LOCAL_RANK", "0")))
    return 0, 1, 0


def _gather(vec: Tensor, world: int, device: torch.device) -> list[Tensor]:
    """Every rank's ``vec`` (all of one length), on the CPU."""
    if world == 1:
        return [vec]
    comm = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    local = vec.to(comm)
    out = [torch.empty_like(local) for _ in range(world)]
    torch.distributed.all_gather(out, local)
    return [t.cpu() for t in out]


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the decoded metadata of a checkpoint file.

    Raises:
        ValueError: the file is not a training checkpoint.
    """
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bayesnets training checkpoint (format {meta.get('format')!r})")
    return load_file(str(path)), {k: json.loads(v) for k, v in meta.items() if k != "format"}


def _jsonable_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, str, type(None))) or (isinstance(value, float) and math.isfinite(value))


class Checkpoint:
    """Where a training loop saves itself, and how it restores itself from there.

    Args:
        path: the checkpoint file (``.safetensors`` by convention).
        every: checkpoint period in steps (0: only at the end of the run).
        resume: continue from ``path`` when it exists; ``False`` starts afresh (and overwrites it).
    """

    def __init__(self, path: str | Path, every: int = 0, resume: bool = True) -> None:
        from inference.checks import check_int

        self.path = Path(path)
        self.every = check_int(every, "checkpoint_every", minimum=0)
        self.resume = bool(resume)

    def due(self, done: int, num_steps: int) -> bool:
        """Whether to write after ``done`` of ``num_steps`` steps."""
        return done == num_steps or (self.every > 0 and done % self.every == 0)

    def clean(self) -> None:
        """Remove the temporary file a killed run may have left (rank 0 only)."""
        if distributed_context()[0] == 0:
            _temporary(self.path).unlink(missing_ok=True)

    # ------------------------------------------------------------------ write
    def write(self, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
              rng: Tensor, device: torch.device, step: int, history: Mapping[str, list[float]],
              meta: Mapping[str, Any]) -> None:
        """Save after ``step`` steps; ``rng`` is this rank's :func:`~inference.seeding.rng_state`.

        Collective under ``torch.distributed``: every rank must call it.
        """
        rank, world, _ = distributed_context()
        ranks = _gather(rng, world, device)
        if rank == 0:
            tensors: dict[str, Tensor] = {}
            for name, module in modules.items():
                tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
            opt = optimizer.state_dict()
            scalars: dict[str, Any] = {}
            for idx, state in opt["state"].items():
                for key, value in state.items():
                    if isinstance(value, Tensor):
                        tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                    elif _jsonable_scalar(value):
                        scalars[f"{idx}.{key}"] = value
                    else:
                        raise TypeError(f"optimizer state {idx}.{key} is a {type(value).__name__}, neither a tensor "
                                        "nor a JSON scalar; this optimiser cannot be checkpointed")
            for r, vec in enumerate(ranks):
                tensors[f"rng.rank{r}"] = vec.contiguous()
            for name, values in history.items():
                tensors[f"history.{name}"] = torch.tensor(values, dtype=torch.float64)
            sched = {} if scheduler is None else {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
            metadata = {"step": step, "param_groups": opt["param_groups"], "optimizer_scalars": scalars,
                        "scheduler": sched, "scaler": scaler.state_dict() if scaler is not None else {},
                        "world_size": world, **meta}
            encoded = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
            tmp = _temporary(self.path)
            save_file(tensors, str(tmp), metadata=encoded)
            os.replace(tmp, self.path)  # atomic: a kill leaves either the old or the new checkpoint
        if world > 1:
            torch.distributed.barrier()

    # ------------------------------------------------------------------ read
    def load(self, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
             settings: Mapping[str, Any]) -> tuple[int, dict[str, list[float]], Tensor, dict[str, Any]] | None:
        """Restore modules, optimiser, schedule and scaler from the file when resuming.

        Returns:
            ``None`` when there is nothing to resume from, else ``(step, history, rng, metadata)``
            with ``rng`` this rank's saved random state (for the caller to restore).

        Raises:
            ValueError: the checkpoint was written with other settings or another world size.
        """
        if not (self.resume and self.path.exists()):
            return None
        tensors, meta = read_checkpoint(self.path)
        rank, world, _ = distributed_context()
        now = json.loads(json.dumps(dict(settings)))
        if meta.get("settings") != now or int(meta.get("world_size", 1)) != world:
            raise ValueError(f"checkpoint {self.path} was written with different settings or world size; saved "
                             f"{meta.get('settings')} (world {meta.get('world_size')}), now {now} (world {world}); "
                             "use resume=False or another checkpoint path")
        for name, module in modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        for k, v in meta["optimizer_scalars"].items():
            idx, key = k.split(".", 1)
            state.setdefault(int(idx), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if scheduler is not None:
            saved = dict(meta["scheduler"])
            if hasattr(scheduler, "lr_lambdas"):  # functions are not saved: keep the ones it was built with
                saved["lr_lambdas"] = [None] * len(scheduler.lr_lambdas)
            scheduler.load_state_dict(saved)
        if scaler is not None:
            scaler.load_state_dict(meta["scaler"])
        history = {k[len("history."):]: v.tolist() for k, v in tensors.items() if k.startswith("history.")}
        return int(meta["step"]), history, tensors[f"rng.rank{rank}"], meta
