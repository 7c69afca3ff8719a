"""Old import paths of modules that moved, kept importable for one release.

0.2 gave each model family its own subpackage (``docs/design.md``). ``import bayesnets.gp``
and the like still work until 0.3: a finder on ``sys.meta_path`` answers the old name with a
module holding the new one's names, after a ``DeprecationWarning`` that says where it went.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED"]

#: Old module name -> new module name.
MOVED = {
    "bayesnets.gp": "bayesnets.tprocess.regression",
    "bayesnets.t_posterior": "bayesnets.tprocess.posterior",
    "bayesnets.gp_classification": "bayesnets.tprocess.classification",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new} in bayesnets 0.2; the old name goes in 0.3",
                      DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
