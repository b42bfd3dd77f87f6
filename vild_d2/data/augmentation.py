"""Training augmentations: detectron2's defaults, or large-scale jitter (INPUT.LSJ)."""

from typing import List

import detectron2.data.transforms as T
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils


def build_train_augmentation(cfg) -> List[T.Augmentation]:
    """
    With ``INPUT.LSJ.ENABLED``: resize by a random factor in [MIN_SCALE, MAX_SCALE] of
    IMAGE_SIZE, crop/pad to IMAGE_SIZE x IMAGE_SIZE, random horizontal flip (ViLD's
    recipe). Otherwise detectron2's ResizeShortestEdge + flip from ``INPUT.*``.
    """
    if not cfg.INPUT.LSJ.ENABLED:
        return utils.build_augmentation(cfg, is_train=True)
    size = cfg.INPUT.LSJ.IMAGE_SIZE
    return [
        T.ResizeScale(cfg.INPUT.LSJ.MIN_SCALE, cfg.INPUT.LSJ.MAX_SCALE, size, size),
        T.FixedSizeCrop(crop_size=(size, size)),
        T.RandomFlip(horizontal=True),
    ]


def train_mapper_kwargs(cfg) -> dict:
    """DatasetMapper's training arguments with :func:`build_train_augmentation`."""
    kwargs = DatasetMapper.from_config(cfg, is_train=True)
    kwargs["augmentations"] = build_train_augmentation(cfg)
    if cfg.INPUT.LSJ.ENABLED:
        kwargs["recompute_boxes"] = cfg.MODEL.MASK_ON  # boxes from the cropped masks
    return kwargs
