"""Training procedures: ``Trainer(**settings).fit(model, data) -> Fit``, and the one loop they share.

* :mod:`~inference.training.trainer` — the :class:`Trainer` base (the shared settings);
* :mod:`~inference.training.fit` — :class:`Fit` (module, per-step history, attrs, safetensors);
* :mod:`~inference.training.loop` — :func:`optimize`, the optimisation loop, and its parts;
* :mod:`~inference.training.checkpoint` — atomic checkpoints with bit-exact resume;
* :mod:`~inference.training.sltt` — SLTT for spiking networks (P43).
"""

from inference.training.checkpoint import Checkpoint
from inference.training.fit import Fit
from inference.training.loop import Minibatches, optimize
from inference.training.sltt import SavedTensorMeter, SLTTTrainer, bptt_step, sltt_loss, sltt_step
from inference.training.trainer import Trainer

__all__ = [
    "Checkpoint",
    "Fit",
    "Minibatches",
    "SLTTTrainer",
    "SavedTensorMeter",
    "Trainer",
    "bptt_step",
    "optimize",
    "sltt_loss",
    "sltt_step",
]
