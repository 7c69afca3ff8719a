"""Prior-data fitted networks (PFNs; Müller et al., arXiv:2112.10510).

* :class:`PFN`, :class:`PFNConfig` — the transformer (:mod:`bayesnets.pfn.model`);
* :class:`BarDistribution`, :func:`fit_borders` — the Riemann regression head (:mod:`bayesnets.pfn.bar`);
* :class:`PFNTrainer` (``fit(model, prior) -> PFNFit``) and its functional form :func:`train_pfn`
  — training on a :class:`priors.tasks.TaskPrior` through the shared loop, with checkpoints,
  exact resume and DDP (:mod:`bayesnets.pfn.train`);
* ``PFN.pretrained("gp")`` — shipped weights (:mod:`bayesnets.pfn.pretrained`);
* :class:`PFNModel` — a BoTorch model over a PFN (:mod:`bayesnets.pfn.botorch`).
"""

from bayesnets.pfn.bar import BarDistribution, fit_borders
from bayesnets.pfn.model import PFN, PFNConfig
from bayesnets.pfn.train import PFNFit, PFNTrainer, train_pfn

__all__ = ["PFN", "BarDistribution", "PFNConfig", "PFNFit", "PFNTrainer", "fit_borders", "train_pfn"]
