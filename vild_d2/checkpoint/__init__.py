"""
Checkpoints from elsewhere: a reader of TensorFlow's checkpoint format and the converter
of the official ViLD release's checkpoints (tools/convert_official_checkpoint.py).
"""

from .convert import VOCABULARY_FILE, WEIGHTS_FILE, convert_official_checkpoint, open_checkpoint
from .official_vild import (
    ConversionError,
    OfficialArchitecture,
    convert_variables,
    infer_architecture,
    is_optimizer_state,
)
from .strict import CheckpointMismatchError, StrictCheckpointer, load_inference_weights
from .tf_checkpoint import CheckpointFormatError, TFCheckpointReader, checkpoint_prefix

__all__ = [
    "VOCABULARY_FILE",
    "WEIGHTS_FILE",
    "convert_official_checkpoint",
    "open_checkpoint",
    "ConversionError",
    "OfficialArchitecture",
    "convert_variables",
    "infer_architecture",
    "is_optimizer_state",
    "CheckpointMismatchError",
    "StrictCheckpointer",
    "load_inference_weights",
    "CheckpointFormatError",
    "TFCheckpointReader",
    "checkpoint_prefix",
]
