"""
The official ViLD backbone: ResNet (v1.5, batch norm ε 1e-4, a stem whose max-pool pads
like TensorFlow's 'SAME') and the official FPN (batch norm after every output level, P6 a
stride-2 conv on P5 before its norm).
"""

import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import BasicStem, build_resnet_backbone
from torch import nn

from .layers import TF_BN_EPS, official_norm, pad_same

__all__ = ["TFStem", "OfficialFPN", "build_official_resnet_fpn_backbone"]


class TFStem(BasicStem):
    """
    detectron2's ResNet stem (7x7/2 conv with padding 3, norm, ReLU) whose 3x3/2 max-pool
    pads as TensorFlow's 'SAME' does: on an even input, one pixel at the bottom/right only.
    PyTorch's ``padding=1`` would shift every window by a pixel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(pad_same(x, 3, 2, value=float("-inf")), kernel_size=3, stride=2)


class OfficialFPN(Backbone):
    """
    The official FPN: lateral 1x1 convs, nearest x2 top-down additions, 3x3 output convs
    (all with biases), P6 = a 3x3/2 'SAME' conv on P5's output conv, then batch norm on
    every level (no ReLU). Outputs ``p2`` ... ``p6`` for inputs ``res2`` ... ``res5``.
    """

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        norm: str,
        size_divisibility: int = 0,
    ):
        """
        Args:
            bottom_up: the ResNet.
            in_features: its outputs, finest first (e.g. res2 ... res5).
            out_channels: channels of every FPN level.
            norm: FrozenBN, BN or SyncBN (with the official ε).
            size_divisibility: inputs are padded to a multiple of this (the official code
                pads every image to 1024 x 1024); 0 = the coarsest stride.
        """
        super().__init__()
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        shapes = bottom_up.output_shape()
        strides = [shapes[f].stride for f in in_features]
        levels = [int(math.log2(s)) for s in strides] + [int(math.log2(strides[-1])) + 1]
        self.lateral_convs = nn.ModuleList(
            Conv2d(shapes[f].channels, out_channels, 1) for f in in_features
        )
        self.output_convs = nn.ModuleList(
            Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_features
        )
        self.p6_conv = Conv2d(out_channels, out_channels, 3, stride=2)  # padded in forward
        self.norms = nn.ModuleList(official_norm(norm, out_channels) for _ in levels)
        for conv in list(self.lateral_convs) + list(self.output_convs) + [self.p6_conv]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.constant_(conv.bias, 0)
        self._out_features = [f"p{level}" for level in levels]
        self._out_feature_strides = {f"p{level}": 2**level for level in levels}
        self._out_feature_channels = {f: out_channels for f in self._out_features}
        self._size_divisibility = size_divisibility or 2 ** levels[-1]

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        bottom_up = self.bottom_up(x)
        laterals: List[torch.Tensor] = []
        for i, conv in enumerate(self.lateral_convs):
            laterals.append(conv(bottom_up[self.in_features[i]]))
        merged = [laterals[-1]]  # top-down: coarsest first, then x2 nearest upsampling + add
        for i in range(len(laterals) - 2, -1, -1):
            merged.insert(
                0, laterals[i] + F.interpolate(merged[0], scale_factor=2.0, mode="nearest")
            )
        outputs: List[torch.Tensor] = []
        for i, conv in enumerate(self.output_convs):
            outputs.append(conv(merged[i]))
        outputs.append(self.p6_conv(pad_same(outputs[-1], 3, 2)))
        results: Dict[str, torch.Tensor] = {}
        for i, norm in enumerate(self.norms):
            results[self._out_features[i]] = norm(outputs[i])
        return results

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name],
                stride=self._out_feature_strides[name],
            )
            for name in self._out_features
        }


def _set_batch_norm_eps(module: nn.Module, eps: float) -> None:
    # detectron2's ResNet builds its norms with PyTorch's ε (1e-5); the official graph's is 1e-4
    for m in module.modules():
        if hasattr(m, "running_var") and hasattr(m, "eps"):
            m.eps = eps


@BACKBONE_REGISTRY.register()
def build_official_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> OfficialFPN:
    """
    The official ViLD backbone from ``MODEL.RESNETS`` (DEPTH, NORM, STEM_OUT_CHANNELS,
    RES2_OUT_CHANNELS, WIDTH_PER_GROUP, STRIDE_IN_1X1 False) and ``MODEL.FPN`` (IN_FEATURES,
    OUT_CHANNELS, NORM, SIZE_DIVISIBILITY).
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    stem_norm = cfg.MODEL.RESNETS.NORM
    bottom_up.stem = TFStem(
        input_shape.channels,
        cfg.MODEL.RESNETS.STEM_OUT_CHANNELS,
        norm=lambda channels: official_norm(stem_norm, channels),
    )
    _set_batch_norm_eps(bottom_up, TF_BN_EPS)
    bottom_up.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)  # the new stem, frozen like the old one
    return OfficialFPN(
        bottom_up,
        cfg.MODEL.FPN.IN_FEATURES,
        cfg.MODEL.FPN.OUT_CHANNELS,
        cfg.MODEL.FPN.NORM,
        cfg.MODEL.FPN.SIZE_DIVISIBILITY,
    )
