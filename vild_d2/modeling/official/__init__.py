"""
The official ViLD architecture (tensorflow/tpu ``projects/vild``) as detectron2
components, registered on import, for checkpoints converted by
``tools/convert_official_checkpoint.py`` (configs/LVIS-OV-official/). Where the official
graph differs from detectron2's Mask R-CNN (batch norm ε and placement, TensorFlow's
'SAME' padding, the legacy +1 box coding, P6 RoI pooling, clipping to the padded input),
these modules reproduce it; the project's own configs do not use them.
"""

from .backbone import OfficialFPN, TFStem, build_official_resnet_fpn_backbone
from .box_coding import LegacyBox2BoxTransform, clip_boxes_inclusive
from .heads import OfficialBoxHead, OfficialMaskHead
from .meta_arch import OfficialViLDRCNN
from .pooler import OfficialROIPooler, official_roi_levels
from .postprocessing import official_postprocess, paste_masks_detectron
from .roi_heads import OfficialViLDBoxPredictor, OfficialViLDROIHeads
from .rpn import OfficialRPN, OfficialRPNHead, official_rpn_proposals
from .selection import is_padding, official_detections, ordered_nms

__all__ = [
    "OfficialFPN",
    "TFStem",
    "build_official_resnet_fpn_backbone",
    "LegacyBox2BoxTransform",
    "clip_boxes_inclusive",
    "OfficialBoxHead",
    "OfficialMaskHead",
    "OfficialViLDRCNN",
    "OfficialROIPooler",
    "official_roi_levels",
    "official_postprocess",
    "paste_masks_detectron",
    "OfficialViLDBoxPredictor",
    "OfficialViLDROIHeads",
    "OfficialRPN",
    "OfficialRPNHead",
    "official_rpn_proposals",
    "is_padding",
    "official_detections",
    "ordered_nms",
]
