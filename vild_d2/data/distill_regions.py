"""
An image's distillation regions, as the training mapper gives them (``"distill_regions"``
of each dataset dict) and the ViLD model takes them: ``Instances`` of the network-input
image size with fields

    ``boxes``       Boxes [M_i, 4], XYXY in network-input pixels (after the mapper's
                    resize/flip/crop, like ``gt_boxes``);
    ``embeddings``  Tensor [M_i, D], the teacher's unit-norm CLIP image embeddings;
    ``valid``       optional bool Tensor [M_i]: regions marked False contribute nothing.

At most ``MODEL.VILD.NUM_DISTILL_REGIONS`` (M) regions per image are used. This module is
the one statement of what distillation needs: the config check before training, the model's
check of each batch and the ROI heads' all say it with :func:`distillation_needs_regions`.
"""

from typing import List

import torch
from detectron2.structures import Instances

__all__ = ["distillation_needs_regions", "checked_distill_regions"]


def distillation_needs_regions(where: str) -> str:
    """The error of a distilling run without regions, ``where`` naming what lacks them."""
    return (
        f"{where}: MODEL.VILD.IMAGE_LOSS_WEIGHT > 0 (ViLD distillation) needs distillation"
        " regions: set DATASETS.REGION_STORE_TRAIN to the region-embedding store of the training"
        " images (tools/precompute_region_embeddings.py), or set the weight to 0 for ViLD-text"
    )


def checked_distill_regions(batched_inputs: List[dict], embed_dim: int) -> List[Instances]:
    """
    Each input's ``distill_regions``, checked against the contract above with D =
    ``embed_dim``; ValueError naming the image (its id and file) otherwise.
    """
    out = []
    for x in batched_inputs:
        where = f"image {x.get('image_id', '?')} ({x.get('file_name', 'no file_name')})"
        if "distill_regions" not in x:
            raise ValueError(distillation_needs_regions(f"{where} has no 'distill_regions'"))
        r = x["distill_regions"]
        for field in ("boxes", "embeddings"):
            if not r.has(field):
                raise ValueError(f"{where}: distill_regions lacks the field '{field}'")
        emb = r.embeddings
        if emb.dim() != 2 or emb.shape[1] != embed_dim or emb.shape[0] != len(r.boxes):
            raise ValueError(
                f"{where}: distill_regions.embeddings has shape {tuple(emb.shape)}, expected "
                f"[{len(r.boxes)}, {embed_dim}] ({len(r.boxes)} boxes, MODEL.VILD.EMBED_DIM"
                f" {embed_dim})"
            )
        if not torch.isfinite(emb).all():
            raise ValueError(f"{where}: distill_regions.embeddings holds NaN or Inf")
        out.append(r)
    return out
