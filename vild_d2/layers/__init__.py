"""Layers: a faster CPU backward for the RoI poolers' ``roi_align``."""

from .roi_align_backward import roi_align_input_grad, use_separable_roi_align_backward

__all__ = ["roi_align_input_grad", "use_separable_roi_align_backward"]
