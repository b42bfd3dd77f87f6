"""
vild_d2: ViLD open-vocabulary detection (Gu et al., ICLR 2022) as a Detectron2 project.

Importing the package registers its datasets and components with detectron2's catalogs
and registries, like detectron2's own projects.
"""

from . import data  # noqa: F401  (registers the builtin datasets)
from . import modeling  # noqa: F401  (registers ViLDRCNN, ViLDROIHeads)
from .config import add_vild_config

__version__ = "0.1.0"
__all__ = ["add_vild_config"]
