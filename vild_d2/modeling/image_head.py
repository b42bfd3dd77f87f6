"""The separate image head of ViLD-ensemble: trained by the distillation loss only."""

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.box_head import build_box_head
from torch import nn

__all__ = ["ImageEmbeddingHead"]


class ImageEmbeddingHead(nn.Module):
    """
    A box head of the same architecture as the text head's (``MODEL.ROI_BOX_HEAD``),
    followed by a projection to the teacher's D and L2 normalisation.
    """

    def __init__(self, cfg, pooled_shape: ShapeSpec):
        super().__init__()
        self.box_head = build_box_head(cfg, pooled_shape)
        out = self.box_head.output_shape
        size = out.channels * (out.width or 1) * (out.height or 1)
        self.projection = nn.Linear(size, cfg.MODEL.VILD.EMBED_DIM)
        nn.init.normal_(self.projection.weight, std=0.01)
        nn.init.constant_(self.projection.bias, 0)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled RoI features [R, C, S, S] -> unit-norm region embeddings [R, D]."""
        return F.normalize(self.projection(self.box_head(pooled).flatten(1)), dim=1)
