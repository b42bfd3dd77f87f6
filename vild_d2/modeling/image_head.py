"""The separate image head of ViLD-ensemble: trained by the distillation loss only."""

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.box_head import build_box_head
from torch import nn

from .versioned import VersionedModule
from .zero_shot_classifier import ZeroShotClassifier

__all__ = ["ImageEmbeddingHead"]


class ImageEmbeddingHead(VersionedModule, nn.Module):
    """
    A box head of the same architecture as the text head's (``MODEL.ROI_BOX_HEAD``)
    followed by a :class:`ZeroShotClassifier` without background: :meth:`embed` gives the
    region embeddings that distillation trains, :meth:`forward` their logits over the
    vocabulary.
    """

    @configurable
    def __init__(self, *, box_head: nn.Module, classifier: ZeroShotClassifier):
        """
        Args:
            box_head: pooled RoI features [R, C, S, S] -> features [R, ...].
            classifier: without background, over the box head's flattened features.
        """
        super().__init__()
        self.box_head = box_head
        self.classifier = classifier

    @classmethod
    def from_config(cls, cfg, pooled_shape: ShapeSpec, text_classifier: ZeroShotClassifier):
        """
        ``MODEL.ROI_BOX_HEAD``'s box head on ``pooled_shape``; ``text_classifier``: the text
        head's, whose vocabularies and τ this head's classifier shares.
        """
        box_head = build_box_head(cfg, pooled_shape)
        out = box_head.output_shape
        classifier = ZeroShotClassifier(
            out.channels * (out.width or 1) * (out.height or 1),
            train_class_embeddings=text_classifier.train_class_embeddings,
            test_class_embeddings=text_classifier.test_class_embeddings,
            train_base_mask=text_classifier.train_base_mask,
            test_base_mask=text_classifier.test_base_mask,
            temperature=text_classifier.temperature,
            use_background=False,
        )
        return {"box_head": box_head, "classifier": classifier}

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled RoI features [R, C, S, S] -> unit-norm region embeddings [R, D]."""
        return self.classifier.embed(self.box_head(pooled))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled RoI features [R, C, S, S] -> logits [R, C_vocab] over the current vocabulary."""
        return self.classifier(self.box_head(pooled))
