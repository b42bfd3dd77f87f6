"""
Guarded shim for libraries that still use NumPy aliases removed in NumPy 1.24.

``lvis==0.5.3`` (the LVIS API that LVISEvaluator uses) calls ``np.float`` while
accumulating precision. The shim defines the alias only when NumPy lacks it, so it does
nothing on NumPy < 1.24 and never shadows a real attribute.
"""

import numpy as np

_ALIASES = {"float": float, "int": int, "bool": bool}


def ensure_numpy_aliases() -> None:
    for name, builtin in _ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, builtin)
