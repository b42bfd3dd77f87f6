"""ViLDRCNN: GeneralizedRCNN that hands each image's distillation regions to the ROI heads."""

from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from ..data.distill_regions import checked_distill_regions
from .versioned import VersionedModule
from .zero_shot_classifier import ZeroShotClassifier

__all__ = ["ViLDRCNN"]


@META_ARCH_REGISTRY.register()
class ViLDRCNN(VersionedModule, GeneralizedRCNN):
    """
    Same as GeneralizedRCNN except in training, where ``batched_inputs[i]
    ["distill_regions"]`` (see :mod:`vild_d2.data.distill_regions` for the contract) is
    validated, moved to the device and given to the ROI heads. Inference is unchanged;
    :meth:`set_vocabulary` swaps the test vocabulary. With ``channels_last`` the 4-D
    weights are kept in channels-last memory (``MODEL.CHANNELS_LAST``).
    """

    @configurable
    def __init__(self, *, channels_last: bool = False, **kwargs):
        """
        Args:
            channels_last: NHWC conv weights, so that feature maps follow (faster on CPU).
            kwargs: GeneralizedRCNN's arguments.
        """
        super().__init__(**kwargs)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg):
        return {**super().from_config(cfg), "channels_last": cfg.MODEL.CHANNELS_LAST}

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        distill = self._distill_regions(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(
            images, features, proposals, gt_instances, distill_regions=distill
        )
        if self.vis_period > 0:
            storage = get_event_storage()
            if storage.iter % self.vis_period == 0:
                self.visualize_training(batched_inputs, proposals)
        losses = dict(detector_losses)
        losses.update(proposal_losses)
        return losses

    def _distill_regions(self, batched_inputs) -> Optional[List[Instances]]:
        """Each image's checked distillation regions on the device, or None without distillation."""
        if not getattr(self.roi_heads, "uses_distillation", False):
            return None
        dim = self.roi_heads.box_predictor.embed_dim
        return [r.to(self.device) for r in checked_distill_regions(batched_inputs, dim)]

    def set_vocabulary(
        self,
        class_embeddings: torch.Tensor,
        base_mask: Optional[torch.Tensor] = None,
        attribute_embeddings: Optional[torch.Tensor] = None,
    ) -> None:
        """
        Detect ``class_embeddings`` ([C, D]) from now on, in eval mode: every
        :class:`ZeroShotClassifier` of the model (the text head's and, for ViLD-ensemble,
        the image head's) gets it. ``base_mask`` [C] bool: classes that were base in
        training (ViLD-ensemble weighs them differently); default every class novel.
        ``attribute_embeddings`` [A, D]: detect the C * A (noun, attribute) pairs, class
        ``c * A + a``, scored p(noun) * p(attribute) (see ZeroShotClassifier).
        """
        for module in self.modules():
            if isinstance(module, ZeroShotClassifier):
                module.set_test_vocabulary(class_embeddings, base_mask, attribute_embeddings)
