"""RoI features as the official ViLD crops them (``multilevel_crop_and_resize``)."""

import math
from typing import List

import torch
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.structures import Boxes
from torch import nn
from torchvision.ops import roi_align

__all__ = ["OfficialROIPooler", "official_roi_levels"]


def official_roi_levels(
    boxes: torch.Tensor, min_level: int, max_level: int, canonical_box_size: float = 224.0
) -> torch.Tensor:
    """
    FPN level of each [R, 4] XYXY box, as the official code computes it:
    floor(log(sqrt(w * h) / 224) / log(2)) + 4 (widths without +1), clamped to
    [min_level, max_level] (2 ... 6 for ViLD: boxes of 896 px and more use P6).

    A box with a negative area (one side inverted: the legacy -1 decoding turns a box
    under 1 px wide into x2 < x1) has a NaN level; TensorFlow's cast of NaN to int32 gives
    INT_MIN, which the clamp makes ``min_level``: so does this function.
    """
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(torch.log(sizes / canonical_box_size) / math.log(2.0)) + 4.0
    levels = torch.nan_to_num(levels, nan=float(min_level))
    return levels.clamp(min=float(min_level), max=float(max_level)).to(torch.int64)


class OfficialROIPooler(nn.Module):
    """
    One bilinear sample at the centre of each of the S x S bins of box / 2^level, with
    the box's own size (no minimum of one feature pixel, no half-pixel shift) and the
    sample's neighbours clamped to the feature map. That is torchvision's ``roi_align``
    with ``sampling_ratio=1, aligned=True`` on boxes moved by half a stride (aligned=True
    subtracts half a feature pixel; aligned=False would widen boxes under one pixel).
    """

    def __init__(self, output_size: int, strides: List[int]):
        """
        Args:
            output_size: S (7 for the box head, 14 for the mask head).
            strides: of the feature maps given to :meth:`forward`, finest first (4 ... 64).
        """
        super().__init__()
        self.output_size = output_size
        self.strides = list(strides)
        self.min_level = int(math.log2(self.strides[0]))
        self.max_level = int(math.log2(self.strides[-1]))

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        """
        Args:
            x: L feature maps [N, C, Hi, Wi].
            box_lists: N Boxes, XYXY in input pixels.

        Returns:
            [R, C, S, S] for the R boxes of all images, in order.
        """
        rois = convert_boxes_to_pooler_format(box_lists)
        levels = official_roi_levels(rois[:, 1:], self.min_level, self.max_level)
        out = x[0].new_zeros((rois.shape[0], x[0].shape[1], self.output_size, self.output_size))
        for i, feature in enumerate(x):
            index = torch.nonzero(levels == self.min_level + i).squeeze(1)
            stride = float(self.strides[i])
            shifted = rois[index]
            shifted = torch.cat([shifted[:, :1], shifted[:, 1:] + 0.5 * stride], dim=1)
            pooled = roi_align(
                feature,
                shifted,
                (self.output_size, self.output_size),
                spatial_scale=1.0 / stride,
                sampling_ratio=1,
                aligned=True,
            )
            out = out.index_put((index,), pooled)
        return out
