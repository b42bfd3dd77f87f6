"""Small box helpers shared by the data path and the teacher tools."""

from typing import Tuple

import numpy as np

__all__ = ["clip_boxes_xyxy"]


def clip_boxes_xyxy(boxes: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
    """[n, 4] XYXY pixels -> a clipped copy inside an image of (height, width)."""
    h, w = image_size
    out = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out
