"""
Import detectron2's modeling package without the two ``FutureWarning: torch.jit.script
is deprecated`` blocks that torch >= 2.10 prints when detectron2 v0.6 scripts its box
coders at import time (``detectron2/modeling/box_regression.py``). Only that warning,
only during that import: a user's own ``torch.jit.script`` still warns.
"""

import warnings

__all__ = ["import_detectron2_quietly"]

JIT_DEPRECATION = r"`torch\.jit\.script` is deprecated"  # the warning's message, as a regex


def import_detectron2_quietly() -> None:
    """Import ``detectron2.modeling`` (and what it imports) once, silencing the jit warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=FutureWarning)
        import detectron2.modeling  # noqa: F401
