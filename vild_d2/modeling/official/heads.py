"""The official ViLD box and mask heads: batch norm after every conv, fc and the deconv."""

from typing import List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY, ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead
from torch import nn

from .layers import official_norm

__all__ = ["OfficialBoxHead", "OfficialMaskHead"]


def _conv_norm_relu(in_channels: int, out_channels: int, norm: str) -> Conv2d:
    conv = Conv2d(
        in_channels,
        out_channels,
        3,
        padding=1,
        norm=official_norm(norm, out_channels),
        activation=nn.ReLU(),
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.constant_(conv.bias, 0)
    return conv


@ROI_BOX_HEAD_REGISTRY.register()
class OfficialBoxHead(nn.Module):
    """
    ``MODEL.ROI_BOX_HEAD``: NUM_CONV x (3x3 conv with bias, norm, ReLU), flatten in
    (C, H, W) order, NUM_FC x (fc with bias, norm, ReLU). detectron2's FastRCNNConvFCHead
    has no norm on its fc layers and no bias beside a norm.
    """

    @configurable
    def __init__(
        self, input_shape: ShapeSpec, *, conv_dims: List[int], fc_dims: List[int], norm: str
    ):
        super().__init__()
        channels = input_shape.channels
        self.convs = nn.ModuleList()
        for dim in conv_dims:
            self.convs.append(_conv_norm_relu(channels, dim, norm))
            channels = dim
        size = channels * input_shape.height * input_shape.width
        self.fcs = nn.ModuleList()
        self.fc_norms = nn.ModuleList()
        for dim in fc_dims:
            fc = nn.Linear(size, dim)
            nn.init.xavier_uniform_(fc.weight)
            nn.init.constant_(fc.bias, 0)
            self.fcs.append(fc)
            self.fc_norms.append(official_norm(norm, dim, dims=1))
            size = dim
        self._output_size = size

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.ROI_BOX_HEAD
        return {
            "input_shape": input_shape,
            "conv_dims": [head.CONV_DIM] * head.NUM_CONV,
            "fc_dims": [head.FC_DIM] * head.NUM_FC,
            "norm": head.NORM,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[R, C, S, S] pooled features -> [R, FC_DIM]."""
        for conv in self.convs:
            x = conv(x)
        x = x.flatten(1)
        for fc, norm in zip(self.fcs, self.fc_norms):
            x = F.relu(norm(fc(x)))
        return x

    @property
    @torch.jit.unused
    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self._output_size)


@ROI_MASK_HEAD_REGISTRY.register()
class OfficialMaskHead(BaseMaskRCNNHead):
    """
    ``MODEL.ROI_MASK_HEAD``: NUM_CONV x (3x3 conv with bias, norm, ReLU), a 2x2/2 deconv
    with bias, norm and ReLU, a 1x1 conv to the mask logits (one channel when
    CLS_AGNOSTIC_MASK). detectron2's MaskRCNNConvUpsampleHead has no norm on its deconv.
    """

    @configurable
    def __init__(
        self, input_shape: ShapeSpec, *, num_classes: int, conv_dims: List[int], norm: str, **kwargs
    ):
        super().__init__(**kwargs)
        channels = input_shape.channels
        self.convs = nn.ModuleList()
        for dim in conv_dims:
            self.convs.append(_conv_norm_relu(channels, dim, norm))
            channels = dim
        self.deconv = ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(self.deconv.bias, 0)
        self.deconv_norm = official_norm(norm, channels)
        self.predictor = Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        head = cfg.MODEL.ROI_MASK_HEAD
        ret.update(
            input_shape=input_shape,
            num_classes=1 if head.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            conv_dims=[head.CONV_DIM] * head.NUM_CONV,
            norm=head.NORM,
        )
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """[R, C, 14, 14] pooled features -> [R, classes, 28, 28] mask logits."""
        for conv in self.convs:
            x = conv(x)
        x = F.relu(self.deconv_norm(self.deconv(x)))
        return self.predictor(x)
