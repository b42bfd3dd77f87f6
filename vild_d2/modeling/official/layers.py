"""
Building blocks of the official ViLD graph that detectron2 lacks: batch norm with
TensorFlow's constants (on convolutions and on fully-connected layers) and TensorFlow's
'SAME' padding.
"""

import math
from typing import List

import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

__all__ = [
    "TF_BN_EPS",
    "TF_BN_MOMENTUM",
    "FrozenBatchNorm",
    "official_norm",
    "pad_same",
]

# The official graph's batch norm (batch_norm_activation: epsilon 1e-4, momentum 0.997);
# PyTorch's momentum weighs the new batch, TensorFlow's the running value.
TF_BN_EPS = 1e-4
TF_BN_MOMENTUM = 1.0 - 0.997


class FrozenBatchNorm(FrozenBatchNorm2d):
    """
    detectron2's FrozenBatchNorm2d for inputs of any rank, [N, C] (the box head's fc
    layers) as well as [N, C, H, W]; same buffers.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


def official_norm(kind: str, channels: int, dims: int = 2) -> nn.Module:
    """
    Batch norm with the official ε and momentum.

    Args:
        kind: "FrozenBN", "BN" or "SyncBN" (detectron2's names).
        channels: C.
        dims: 2 for [N, C, H, W] inputs, 1 for [N, C].
    """
    if kind == "FrozenBN":
        return (FrozenBatchNorm2d if dims == 2 else FrozenBatchNorm)(channels, eps=TF_BN_EPS)
    if kind == "SyncBN":
        return nn.SyncBatchNorm(channels, eps=TF_BN_EPS, momentum=TF_BN_MOMENTUM)
    if kind == "BN":
        cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        return cls(channels, eps=TF_BN_EPS, momentum=TF_BN_MOMENTUM)
    raise ValueError(
        f"norm '{kind}': the official ViLD architecture has batch norm everywhere; "
        "choose FrozenBN, BN or SyncBN"
    )


def pad_same(x: torch.Tensor, kernel_size: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """
    TensorFlow's 'SAME' padding of an [N, C, H, W] input for a window of ``kernel_size``
    and ``stride``: the output has ceil(size / stride) positions and the odd pixel of padding,
    if any, goes at the bottom/right (where PyTorch's symmetric padding would shift it).
    """
    pads: List[int] = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad's order: last dimension first
        total = max((int(math.ceil(size / stride)) - 1) * stride + kernel_size - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)
