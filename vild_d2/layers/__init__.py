"""Layers: faster CPU kernels for RoIAlign's backward and CLIP's average pools."""

from .block_avg_pool import BlockAvgPool2d, block_avg_pool2d, use_block_avg_pools
from .roi_align_backward import roi_align_input_grad, use_separable_roi_align_backward

__all__ = [
    "BlockAvgPool2d",
    "block_avg_pool2d",
    "roi_align_input_grad",
    "use_block_avg_pools",
    "use_separable_roi_align_backward",
]
