"""ViLD's ROI heads and box predictor with the official box coding, clipping and RoI pooling."""

from typing import List

from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY
from detectron2.structures import Boxes, Instances

from ..box_predictor import ROI_BOX_PREDICTOR_REGISTRY, ViLDBoxPredictor
from ..roi_heads import ViLDROIHeads
from .box_coding import LegacyBox2BoxTransform, clip_boxes_inclusive
from .pooler import OfficialROIPooler
from .selection import official_detections

__all__ = ["OfficialViLDBoxPredictor", "OfficialViLDROIHeads"]


@ROI_BOX_PREDICTOR_REGISTRY.register()
class OfficialViLDBoxPredictor(ViLDBoxPredictor):
    """
    ViLDBoxPredictor whose boxes are decoded the legacy way and clipped to [0, size - 1],
    and whose detections are chosen as officially (:func:`official_detections`) with the
    test score threshold, NMS threshold and detections per image of the config.
    """

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        weights = tuple(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS)
        ret["box2box_transform"] = LegacyBox2BoxTransform(weights)
        return ret

    def predict_boxes(self, predictions, proposals):
        boxes = super().predict_boxes(predictions, proposals)
        return tuple(clip_boxes_inclusive(b, p.image_size) for b, p in zip(boxes, proposals))

    def inference(self, predictions, proposals: List[Instances]):
        """As detectron2's: (N Instances with pred_boxes, scores, pred_classes; N [K] indices)."""
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        results, indices = [], []
        for image_boxes, image_scores, p in zip(boxes, scores, proposals):
            kept_boxes, kept_scores, classes, kept = official_detections(
                image_boxes,
                image_scores[:, :-1],  # background last
                self.test_score_thresh,
                self.test_nms_thresh,
                self.test_topk_per_image,
            )
            result = Instances(p.image_size)
            result.pred_boxes = Boxes(kept_boxes)
            result.scores = kept_scores
            result.pred_classes = classes
            results.append(result)
            indices.append(kept)
        return results, indices


@ROI_HEADS_REGISTRY.register()
class OfficialViLDROIHeads(ViLDROIHeads):
    """
    :class:`ViLDROIHeads` (text head, distillation, ViLD-ensemble's image head) with
    :class:`OfficialViLDBoxPredictor` and :class:`OfficialROIPooler` for boxes and masks
    (``ROI_HEADS.IN_FEATURES`` p2 ... p6: the official pooling uses P6 for boxes of 896 px
    and more).
    """

    default_box_predictor = "OfficialViLDBoxPredictor"

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        strides = [input_shape[f].stride for f in cfg.MODEL.ROI_HEADS.IN_FEATURES]
        ret["box_pooler"] = OfficialROIPooler(cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION, strides)
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        ret = super()._init_mask_head(cfg, input_shape)
        if ret:
            strides = [input_shape[f].stride for f in cfg.MODEL.ROI_HEADS.IN_FEATURES]
            resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
            ret["mask_pooler"] = OfficialROIPooler(resolution, strides)
        return ret
