"""
ViLD ROI heads: the text head (ViLD-text), image distillation (ViLD) and the separate
image head of ViLD-ensemble, on top of detectron2's StandardROIHeads (class-agnostic
box regression and masks come from the config).

In training with distillation each image brings its distillation regions
(:mod:`vild_d2.data.distill_regions`: the contract), passed on by
:class:`vild_d2.modeling.ViLDRCNN`.
"""

import logging
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from ..data.distill_regions import distillation_needs_regions
from .box_predictor import ROI_BOX_PREDICTOR_REGISTRY, ViLDBoxPredictor
from .image_head import ImageEmbeddingHead
from .losses import distillation_l1_loss
from .versioned import VersionedModule

__all__ = ["ViLDROIHeads"]


@ROI_HEADS_REGISTRY.register()
class ViLDROIHeads(VersionedModule, StandardROIHeads):
    """
    Training: the N sampled proposals (text loss) and the M distillation regions of each
    image (image loss, weight w) are pooled and run through the box head in one pass.
    With an ``image_head`` (ViLD-ensemble) the text head sees only the proposals and the
    image head only the distillation regions.
    Inference: detections over the test vocabulary; with an image head, ensemble scores.
    """

    # ROI_BOX_PREDICTOR_REGISTRY name used when MODEL.ROI_BOX_HEAD.PREDICTOR_NAME is ""
    default_box_predictor = "ViLDBoxPredictor"

    @configurable
    def __init__(
        self,
        *,
        image_head: Optional[nn.Module] = None,
        image_loss_weight: float = 0.5,
        num_distill_regions: int = 300,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(self.box_predictor, ViLDBoxPredictor):
            raise TypeError("ViLDROIHeads needs a ViLDBoxPredictor")
        self.image_head = image_head
        self.image_loss_weight = image_loss_weight
        self.num_distill_regions = num_distill_regions

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["image_loss_weight"] = cfg.MODEL.VILD.IMAGE_LOSS_WEIGHT
        ret["num_distill_regions"] = cfg.MODEL.VILD.NUM_DISTILL_REGIONS
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        name = cfg.MODEL.ROI_BOX_HEAD.PREDICTOR_NAME or cls.default_box_predictor
        predictor = ROI_BOX_PREDICTOR_REGISTRY.get(name)
        ret["box_predictor"] = predictor(cfg, ret["box_head"].output_shape)
        if cfg.MODEL.VILD.ENSEMBLE:
            channels = [input_shape[f].channels for f in cfg.MODEL.ROI_HEADS.IN_FEATURES][0]
            res = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
            ret["image_head"] = ImageEmbeddingHead(
                cfg,
                ShapeSpec(channels=channels, height=res, width=res),
                ret["box_predictor"].classifier,
            )
        return ret

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # ViLD-ensemble initialised from a checkpoint without an image head (a base detector,
        # ViLD-text): its image head's box head starts as a copy of the text head's, so that
        # both branches start from the same pretrained features. The official release trains
        # both from ImageNet, where the two are equally untrained; here a random image head
        # would start far behind the pretrained text head (it reached 27.8% top-1 on the
        # world's val boxes vs the shared ViLD head's 39.7%).
        source, target = prefix + "box_head.", prefix + "image_head.box_head."
        if self.image_head is not None and not any(k.startswith(target) for k in state_dict):
            copied = {
                target + k[len(source) :]: v for k, v in state_dict.items() if k.startswith(source)
            }
            if copied:
                logging.getLogger(__name__).info(
                    "ViLD-ensemble: the checkpoint has no image head; its box head starts as a "
                    "copy of the text head's (%d tensors)",
                    len(copied),
                )
                state_dict.update(copied)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def uses_distillation(self) -> bool:
        return self.training and self.image_loss_weight > 0

    def distilled_embeddings(self, pooled: torch.Tensor) -> torch.Tensor:
        """
        [R, C, S, S] pooled RoI features -> [R, D] the unit-norm region embeddings that
        distillation trains: the image head's (ViLD-ensemble) or else the box head's + the
        box predictor's projection.
        """
        if self.image_head is not None:
            return self.image_head.embed(pooled)
        return self.box_predictor.embed(self.box_head(pooled))

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
        distill_regions: Optional[List[Instances]] = None,
    ):
        if not self.training:
            return super().forward(images, features, proposals, targets)
        assert targets, "'targets' argument is required during training"
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses = self._forward_box(features, proposals, distill_regions)
        losses.update(self._forward_mask(features, proposals))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def _forward_box(self, features, proposals, distill_regions=None):
        feats = [features[f] for f in self.box_in_features]
        if not self.training:
            pooled = self.box_pooler(feats, [p.proposal_boxes for p in proposals])
            predictions = self.box_predictor(self.box_head(pooled))
            if self.image_head is not None:
                predictions = predictions + (self.image_head(pooled),)
            return self.box_predictor.inference(predictions, proposals)[0]

        regions = self._distill_regions(distill_regions)
        boxes = [p.proposal_boxes for p in proposals]
        if regions is not None:
            boxes = [Boxes.cat([b, r.boxes]) for b, r in zip(boxes, regions)]
        pooled = self.box_pooler(feats, boxes)
        is_proposal = torch.cat(
            [torch.arange(len(b), device=pooled.device) < len(p) for b, p in zip(boxes, proposals)]
        )
        if regions is None:
            return self.pooled_box_losses(pooled, proposals)
        # float32 targets (stores keep float16; autocast cannot cat float16 on a CPU)
        teacher = torch.cat([r.embeddings.float() for r in regions]).to(pooled.device)
        valid = torch.cat(
            [
                (
                    r.valid
                    if r.has("valid")
                    else torch.ones(len(r), dtype=torch.bool, device=r.embeddings.device)
                )
                for r in regions
            ]
        ).to(pooled.device)
        return self.pooled_box_losses(
            pooled[is_proposal], proposals, pooled[~is_proposal], teacher, valid
        )

    def _distill_regions(self, distill_regions) -> Optional[List[Instances]]:
        """Each image's first M distillation regions in training with distillation, else None."""
        if not self.uses_distillation:
            return None
        if distill_regions is None:
            raise ValueError(distillation_needs_regions("the batch has no 'distill_regions'"))
        return [r[: self.num_distill_regions] for r in distill_regions]

    def pooled_box_losses(
        self,
        proposal_features: torch.Tensor,
        proposals: List[Instances],
        region_features: Optional[torch.Tensor] = None,
        teacher: Optional[torch.Tensor] = None,
        valid: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        The box losses from pooled RoI features: the text loss and box regression of the
        sampled proposals and, with ``region_features``, the distillation loss (weight w).
        Used by training and by head training on cached features
        (:mod:`vild_d2.engine.cached_roi_features`).

        Args:
            proposal_features: [N, C, S, S] pooled features of the sampled proposals.
            proposals: Instances with ``proposal_boxes``, ``gt_classes``, ``gt_boxes``
                (N rows over all of them, in the order of ``proposal_features``).
            region_features: [M, C, S, S] pooled features of the distillation regions.
            teacher: [M, D] their teacher embeddings (unit norm).
            valid: optional [M] bool; regions marked False contribute nothing.
        """
        n = len(proposal_features)
        if region_features is None:
            text_x = self.box_head(proposal_features)
        elif self.image_head is None:  # one pass: the text head's features are distilled
            x = self.box_head(torch.cat([proposal_features, region_features]))
            text_x, region_x = x[:n], x[n:]
        else:
            text_x = self.box_head(proposal_features)
        losses = self.box_predictor.losses(self.box_predictor(text_x), proposals)
        if region_features is not None:
            if self.image_head is None:
                student = self.box_predictor.embed(region_x)
                losses["loss_image"] = self._weighted_distillation(student, teacher, valid)
            else:
                losses.update(self.image_head_losses(region_features, teacher, valid))
        return losses

    def image_head_losses(
        self,
        region_features: torch.Tensor,
        teacher: torch.Tensor,
        valid: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        ViLD-ensemble's image head alone: {"loss_image": w * L1} of its embeddings of
        [M, C, S, S] pooled region features against the [M, D] teacher embeddings
        (``valid``: optional [M] bool).
        """
        if self.image_head is None:
            raise ValueError("image_head_losses needs ViLD-ensemble's image head (ENSEMBLE: True)")
        student = self.image_head.embed(region_features)
        return {"loss_image": self._weighted_distillation(student, teacher, valid)}

    def _weighted_distillation(self, student, teacher, valid) -> torch.Tensor:
        return self.image_loss_weight * distillation_l1_loss(
            student, teacher.to(student.device), valid
        )
