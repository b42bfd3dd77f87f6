"""Detections drawn on their image with detectron2's Visualizer (names and scores)."""

from typing import Sequence

import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

__all__ = ["draw_detections", "PICTURE_MIN_SIDE"]

PICTURE_MIN_SIDE = 512  # pictures of smaller images are drawn enlarged to this longer side, pixels


def draw_detections(rgb: np.ndarray, instances: Instances, names: Sequence[str]) -> np.ndarray:
    """
    Args:
        rgb: [H, W, 3] uint8 RGB, the image the detections are in.
        instances: image-sized detections (pred_boxes, scores, pred_classes, pred_masks).
        names: the vocabulary that ``pred_classes`` index.

    Returns:
        [H', W', 3] uint8 RGB; small images enlarged so that labels stay legible.
    """
    scale = max(1.0, PICTURE_MIN_SIDE / max(rgb.shape[:2]))
    metadata = Metadata(thing_classes=list(names))
    return Visualizer(rgb, metadata, scale=scale).draw_instance_predictions(instances).get_image()
