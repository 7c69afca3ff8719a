"""PFN weights shipped inside the package (``bayesnets/pfn/weights/<name>.safetensors``).

``PFN.pretrained("gp")`` reads them from the installed package — no network access. Every
file carries its training record (recipe, steps, device, final loss, wall time) and the
task prior it was trained on, in its safetensors metadata; they were produced by
:mod:`bayesnets.pfn.recipes` (see ``docs/pfn.md``).

Available:

* ``"gp"`` — GP-hyperprior PFN for 1-5 input features on ``[0, 1]^d`` and standardised
  targets (:func:`bayesnets.pfn.recipes.gp_prior`), up to ~200 training points.
* ``"lcpfn"`` — LC-PFN for learning curves of up to 100 epochs (:class:`priors.tasks.LearningCurvePrior`);
  use it through :class:`bayesnets.pfn.lcpfn.LCPFN` (``docs/lcpfn.md``).
"""

from __future__ import annotations

from bayesnets.pfn.model import PFN
from bayesnets.pfn.weights import available
from priors.tasks import TaskPrior, prior_from_config

__all__ = ["available", "load_pretrained", "pretrained_prior"]


def load_pretrained(name: str = "gp") -> PFN:
    """Load a shipped PFN (float32, eval mode, on the CPU; move it with ``.to(device)``)."""
    return PFN.pretrained(name)


def pretrained_prior(name: str = "gp") -> TaskPrior:
    """The task prior a shipped PFN was trained on (from its metadata)."""
    return prior_from_config(load_pretrained(name).metadata["training"]["prior"])
