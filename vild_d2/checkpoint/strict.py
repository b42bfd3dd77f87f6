"""
Loading weights for inference: every parameter of the config's model must come from the
checkpoint. detectron2's checkpointer only warns about the ones it leaves at their random
initial values (a ResNet-152 config given ResNet-50 weights runs to the end with random
blocks, its only sign ~200 lines of "not found in the checkpoint"); evaluation, the demo,
the detector, the page and the export refuse such a checkpoint in one line instead.
Training keeps detectron2's behaviour (starting from a backbone-only checkpoint is normal).
"""

from typing import List

from detectron2.checkpoint import DetectionCheckpointer

from ..config import ConfigError

__all__ = ["CheckpointMismatchError", "StrictCheckpointer", "load_inference_weights"]

# in the model, set by running statistics rather than by a checkpoint
_NOT_WEIGHTS = ("num_batches_tracked",)


class CheckpointMismatchError(ConfigError):
    """A checkpoint that leaves parameters of the model unset, or gives them another shape."""


class StrictCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that raises :class:`CheckpointMismatchError` where it would warn
    about model parameters missing from the checkpoint or of another shape (keys of the
    checkpoint that the model does not use are still only reported)."""

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        wrong_shape = [key for key, *_ in incompatible.incorrect_shapes]
        missing = [
            k
            for k in incompatible.missing_keys
            if k not in wrong_shape and not k.endswith(_NOT_WEIGHTS)
        ]
        if missing or wrong_shape:
            raise CheckpointMismatchError(_mismatch_text(self.path, missing, wrong_shape))
        return incompatible

    def load(self, path, checkpointables=None):
        self.path = path
        return super().load(path, checkpointables)


def _mismatch_text(path: str, missing: List[str], wrong_shape: List[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} parameters of the model are not in it ({_some(missing)})")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} have another shape there ({_some(wrong_shape)})")
    return (
        f"MODEL.WEIGHTS {path} does not fit the config's model: {'; '.join(parts)}. Is the"
        " config the one these weights were trained or converted with (depth, heads, widths)?"
    )


def _some(keys: List[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def load_inference_weights(model, path: str, **checkpointer_kwargs) -> None:
    """Load ``path`` into ``model`` for inference; CheckpointMismatchError if it does not fit."""
    StrictCheckpointer(model, **checkpointer_kwargs).load(path)
