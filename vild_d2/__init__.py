"""
vild_d2: ViLD open-vocabulary detection (Gu et al., ICLR 2022) as a Detectron2 project.

Importing the package registers its datasets and components with detectron2's catalogs
and registries, like detectron2's own projects.
"""

from .compat.quiet_imports import import_detectron2_quietly

import_detectron2_quietly()  # first, before any module below imports detectron2

from . import data  # noqa: F401, E402  (registers the builtin datasets)
from . import modeling  # noqa: F401, E402  (registers ViLDRCNN, ViLDROIHeads)
from .config import add_vild_config  # noqa: E402
from .errors import VildD2Error  # noqa: E402
from .inference.detector import OpenVocabularyDetector  # noqa: E402  (ViLD in one call)
from .layers import use_separable_roi_align_backward  # noqa: E402

# roi_align's CPU backward: the same gradient in 0.24-0.38x the time (vild_d2/layers/)
use_separable_roi_align_backward()

__version__ = "0.1.0"
__all__ = ["add_vild_config", "OpenVocabularyDetector", "VildD2Error"]
