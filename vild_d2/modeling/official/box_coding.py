"""
Box coding of the official ViLD (Detectron's legacy convention): a box [x1, x2] covers the
pixels x1 ... x2, so its width is x2 - x1 + 1 and an image of width W spans [0, W - 1].
detectron2's Box2BoxTransform uses widths x2 - x1; both use (dx, dy, dw, dh) deltas here
(the converter reorders the official (dy, dx, dh, dw) outputs).
"""

import math
from typing import Tuple

import torch

__all__ = ["LegacyBox2BoxTransform", "clip_boxes_inclusive"]

_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class LegacyBox2BoxTransform:
    """
    Same interface as detectron2's Box2BoxTransform (``get_deltas``, ``apply_deltas``),
    with widths and heights counted as x2 - x1 + 1 and decoded boxes ending at
    x1' + w' - 1. A class of its own (TorchScript classes cannot inherit).
    """

    def __init__(
        self,
        weights: Tuple[float, float, float, float],
        scale_clamp: float = _DEFAULT_SCALE_CLAMP,
    ):
        """
        Args:
            weights: (wx, wy, ww, wh): (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for the box head.
            scale_clamp: dw and dh are clamped to at most this (log(1000 / 16), as officially).
        """
        self.weights = weights
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """[N, 4] XYXY boxes and their targets -> [N, 4] (dx, dy, dw, dh) deltas."""
        wx, wy, ww, wh = self.weights
        src_w = src_boxes[:, 2] - src_boxes[:, 0] + 1.0
        src_h = src_boxes[:, 3] - src_boxes[:, 1] + 1.0
        src_x = src_boxes[:, 0] + 0.5 * src_w
        src_y = src_boxes[:, 1] + 0.5 * src_h
        tgt_w = target_boxes[:, 2] - target_boxes[:, 0] + 1.0
        tgt_h = target_boxes[:, 3] - target_boxes[:, 1] + 1.0
        tgt_x = target_boxes[:, 0] + 0.5 * tgt_w
        tgt_y = target_boxes[:, 1] + 0.5 * tgt_h
        return torch.stack(
            (
                wx * (tgt_x - src_x) / src_w,
                wy * (tgt_y - src_y) / src_h,
                ww * torch.log(tgt_w / src_w),
                wh * torch.log(tgt_h / src_h),
            ),
            dim=1,
        )

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            deltas: [N, 4k] (dx, dy, dw, dh) per box and class (k = 1: class-agnostic).
            boxes: [N, 4] XYXY reference boxes.

        Returns:
            [N, 4k] decoded XYXY boxes (not clipped).
        """
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        widths = (boxes[:, 2] - boxes[:, 0] + 1.0)[:, None]
        heights = (boxes[:, 3] - boxes[:, 1] + 1.0)[:, None]
        ctr_x = boxes[:, 0, None] + 0.5 * widths
        ctr_y = boxes[:, 1, None] + 0.5 * heights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        pred_w = torch.exp(dw) * widths
        pred_h = torch.exp(dh) * heights
        x1 = pred_ctr_x - 0.5 * pred_w
        y1 = pred_ctr_y - 0.5 * pred_h
        out = torch.stack((x1, y1, x1 + pred_w - 1.0, y1 + pred_h - 1.0), dim=2)
        return out.reshape(deltas.shape)


def clip_boxes_inclusive(boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
    """[N, 4] XYXY boxes clipped to [0, W - 1] x [0, H - 1] (the official clipping)."""
    height, width = image_size
    x = boxes[:, 0::2].clamp(min=0.0, max=float(width - 1))
    y = boxes[:, 1::2].clamp(min=0.0, max=float(height - 1))
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)
