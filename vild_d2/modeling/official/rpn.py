"""
The official ViLD region proposal network: a head of shared convs with batch norm per FPN
level, and proposals chosen level by level as the official code does (sigmoid scores,
legacy box decoding, clipping to the padded input, no minimum size).
"""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN
from detectron2.modeling.proposal_generator.rpn import RPN_HEAD_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import nn

from .box_coding import LegacyBox2BoxTransform, clip_boxes_inclusive
from .layers import official_norm
from .selection import ordered_nms

__all__ = ["OfficialRPNHead", "OfficialRPN", "official_rpn_proposals"]


@RPN_HEAD_REGISTRY.register()
class OfficialRPNHead(nn.Module):
    """
    ``len(conv_dims)`` 3x3 convs shared by all levels, each followed by a batch norm of
    its own *per level* and a ReLU; then 1x1 convs to A objectness logits and A x 4 deltas
    (channel a * 4 + j, (dx, dy, dw, dh)). detectron2's StandardRPNHead has no norm.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        conv_dims: List[int],
        num_levels: int,
        norm: str,
        box_dim: int = 4,
    ):
        super().__init__()
        dims = [in_channels] + list(conv_dims)
        self.convs = nn.ModuleList(
            Conv2d(dims[i], dims[i + 1], 3, padding=1) for i in range(len(conv_dims))
        )
        self.level_norms = nn.ModuleList(
            nn.ModuleList(official_norm(norm, d) for d in conv_dims) for _ in range(num_levels)
        )
        self.objectness_logits = Conv2d(dims[-1], num_anchors, 1)
        self.anchor_deltas = Conv2d(dims[-1], num_anchors * box_dim, 1)
        for layer in list(self.convs) + [self.objectness_logits, self.anchor_deltas]:
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"OfficialRPNHead needs equal channels on every level, got {channels}")
        in_channels = channels.pop()
        anchors = set(build_anchor_generator(cfg, input_shape).num_anchors)
        if len(anchors) != 1:
            raise ValueError(f"OfficialRPNHead needs as many anchors on every level, got {anchors}")
        return {
            "in_channels": in_channels,
            "num_anchors": anchors.pop(),
            "conv_dims": [in_channels if d == -1 else d for d in cfg.MODEL.RPN.CONV_DIMS],
            "num_levels": len(input_shape),
            "norm": cfg.MODEL.RPN.NORM,
        }

    def forward(self, features: List[torch.Tensor]):
        """
        Args:
            features: L maps [N, C, Hi, Wi], finest first.

        Returns:
            L objectness maps [N, A, Hi, Wi] and L delta maps [N, A * 4, Hi, Wi].
        """
        logits: List[torch.Tensor] = []
        deltas: List[torch.Tensor] = []
        for level, norms in enumerate(self.level_norms):
            x = features[level]
            for conv, norm in zip(self.convs, norms):
                x = F.relu(norm(conv(x)))
            logits.append(self.objectness_logits(x))
            deltas.append(self.anchor_deltas(x))
        return logits, deltas


def official_rpn_proposals(
    anchors: List[torch.Tensor],
    logits: List[torch.Tensor],
    deltas: List[torch.Tensor],
    image_size: Tuple[int, int],
    box2box_transform: LegacyBox2BoxTransform,
    pre_nms_topk: int,
    post_nms_topk: int,
    nms_thresh: float,
) -> List[Instances]:
    """
    Proposals as the official code chooses them, for every image and every level: the
    ``pre_nms_topk`` best anchors by sigmoid score (ties: the lower index first, as
    ``tf.nn.top_k``), decoded, clipped to [0, size - 1] of the padded input, NMS by the
    official rules (:func:`ordered_nms`: boxes clipped to all zeros are padding), at most
    ``post_nms_topk`` kept and the rest of the level's ``post_nms_topk`` filled with
    padding (zero boxes of score 0); then the ``post_nms_topk`` best over all levels. So
    there are always ``post_nms_topk`` proposals, padding last when the levels keep fewer,
    as officially (the heads score padding too). No box is dropped for its size.

    Args:
        anchors: L tensors [Ai, 4], XYXY in input pixels.
        logits: L tensors [N, Ai] of objectness logits.
        deltas: L tensors [N, Ai, 4] of (dx, dy, dw, dh).
        image_size: (H, W) of the padded input.

    Returns:
        N Instances of ``image_size`` with ``proposal_boxes`` and ``objectness_logits``
        (logits, not sigmoid scores; -inf for padding), best first.
    """
    results: List[Instances] = []
    for n in range(logits[0].shape[0]):
        boxes_per_level: List[torch.Tensor] = []
        logits_per_level: List[torch.Tensor] = []
        for level_anchors, level_logits, level_deltas in zip(anchors, logits, deltas):
            scores = level_logits[n].sigmoid()
            order = torch.sort(scores, descending=True, stable=True)[1][:pre_nms_topk]
            boxes = box2box_transform.apply_deltas(level_deltas[n][order], level_anchors[order])
            boxes = clip_boxes_inclusive(boxes, image_size)
            keep = ordered_nms(boxes, nms_thresh)[:post_nms_topk]
            padding = post_nms_topk - keep.numel()
            boxes_per_level.append(torch.cat([boxes[keep], boxes.new_zeros((padding, 4))]))
            kept_logits = level_logits[n][order][keep]
            padding_logits = kept_logits.new_full((padding,), float("-inf"))
            logits_per_level.append(torch.cat([kept_logits, padding_logits]))
        all_logits = torch.cat(logits_per_level)
        best = torch.sort(all_logits.sigmoid(), descending=True, stable=True)[1][:post_nms_topk]
        result = Instances(image_size)
        result.proposal_boxes = Boxes(torch.cat(boxes_per_level)[best])
        result.objectness_logits = all_logits[best]
        results.append(result)
    return results


@PROPOSAL_GENERATOR_REGISTRY.register()
class OfficialRPN(RPN):
    """
    detectron2's RPN (anchors, matching and losses) with the official box coding
    (:class:`LegacyBox2BoxTransform`) and proposal choice (:func:`official_rpn_proposals`).
    ``images.image_sizes`` must be the padded input size, as
    :class:`OfficialViLDRCNN` gives it (the official code's "desired size").
    """

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["box2box_transform"] = LegacyBox2BoxTransform(tuple(cfg.MODEL.RPN.BBOX_REG_WEIGHTS))
        return ret

    def predict_proposals(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
    ):
        with torch.no_grad():
            return official_rpn_proposals(
                [a.tensor for a in anchors],
                pred_objectness_logits,
                pred_anchor_deltas,
                image_sizes[0],
                self.box2box_transform,
                self.pre_nms_topk[self.training],
                self.post_nms_topk[self.training],
                self.nms_thresh,
            )
