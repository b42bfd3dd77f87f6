"""
Detections in the original image as the official evaluation makes them: boxes divided by
the resize scale (not clipped to the image), masks pasted Detectron-style.
"""

from typing import Tuple

import cv2
import numpy as np
import torch
from detectron2.structures import Boxes, Instances

__all__ = ["official_postprocess", "paste_masks_detectron"]


def paste_masks_detectron(
    masks: np.ndarray, boxes: np.ndarray, height: int, width: int
) -> np.ndarray:
    """
    Paste box-frame mask probabilities into the image as Detectron (and the official ViLD
    evaluation) does: pad the M x M mask by one pixel of zeros, grow the box by (M + 2) / M
    around its centre, truncate it to integers, resize the padded mask to the box's
    (x2 - x1 + 1) x (y2 - y1 + 1) pixels with OpenCV's bilinear resize and threshold at 0.5.

    Args:
        masks: [N, M, M] probabilities.
        boxes: [N, 4] XYXY in image pixels.
        height, width: of the image.

    Returns:
        [N, height, width] bool.
    """
    num, mask_h, mask_w = masks.shape
    out = np.zeros((num, height, width), dtype=bool)
    if num == 0:
        return out
    boxes = boxes.astype(np.float64)
    scale = max((mask_w + 2.0) / mask_w, (mask_h + 2.0) / mask_h)
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5
    ctr_x, ctr_y = boxes[:, 0] + half_w, boxes[:, 1] + half_h
    half_w, half_h = half_w * scale, half_h * scale
    ref = np.stack([ctr_x - half_w, ctr_y - half_h, ctr_x + half_w, ctr_y + half_h], 1)
    ref = ref.astype(np.int32)  # truncation towards zero, as the official code
    padded = np.zeros((mask_h + 2, mask_w + 2), dtype=np.float32)
    for i in range(num):
        padded[1:-1, 1:-1] = masks[i]
        x1, y1, x2, y2 = (int(v) for v in ref[i])
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        resized = cv2.resize(padded, (w, h)) > 0.5
        x0, x1c = min(max(x1, 0), width), min(max(x2 + 1, 0), width)
        y0, y1c = min(max(y1, 0), height), min(max(y2 + 1, 0), height)
        out[i, y0:y1c, x0:x1c] = resized[y0 - y1 : y1c - y1, x0 - x1 : x1c - x1]
    return out


def official_postprocess(
    results: Instances, input_size: Tuple[int, int], height: int, width: int
) -> Instances:
    """
    Args:
        results: detections in network-input pixels (``pred_boxes``, ``scores``,
            ``pred_classes``, optionally ``pred_masks`` [N, 1, M, M] probabilities).
        input_size: (h, w) of the resized image inside the padded network input.
        height, width: of the original image.

    Returns:
        Instances of (height, width): boxes divided by the scale (input / original, per
        axis, as the official ``image_info``), masks [N, height, width] bool.
    """
    scale_y = np.float32(input_size[0]) / np.float32(height)
    scale_x = np.float32(input_size[1]) / np.float32(width)
    boxes = results.pred_boxes.tensor
    boxes = boxes / boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
    out = Instances((height, width))
    out.pred_boxes = Boxes(boxes)
    out.scores = results.scores
    out.pred_classes = results.pred_classes
    if results.has("pred_masks"):
        masks = results.pred_masks[:, 0].detach().cpu().numpy()
        pasted = paste_masks_detectron(masks, boxes.detach().cpu().numpy(), height, width)
        out.pred_masks = torch.from_numpy(pasted).to(boxes.device)
    return out
