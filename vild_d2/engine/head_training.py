"""
Train a ViLD detector's box heads on cached RoI features
(:mod:`vild_d2.engine.cached_roi_features`): the text head (box head + box predictor)
with the text loss and box regression of the sampled proposals, and the distillation L1
of the stored regions (into the text head's embedding, or into ViLD-ensemble's image
head), with the model's own loss code (:meth:`ViLDROIHeads.pooled_box_losses`).

Why: on a CPU the backbone is almost all of a training step's cost, so the end-to-end
schedule the budget allows shows each distillation region to the student about once,
while a probe on the same frozen features needs several passes to fit the teacher. On
the cache one epoch costs the box head's fully connected layers only.
"""

import logging
import math
import time
from typing import Dict, List

import torch
from detectron2.utils.events import EventStorage

from .cached_roi_features import RoiFeatureCache

__all__ = ["head_parameters", "train_heads_on_cache"]

logger = logging.getLogger(__name__)


def head_parameters(model) -> List[torch.nn.Parameter]:
    """The parameters head training updates: box head, box predictor and image head."""
    heads = model.roi_heads
    modules = [heads.box_head, heads.box_predictor]
    if getattr(heads, "image_head", None) is not None:
        modules.append(heads.image_head)
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def _lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``base_lr`` to 0."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch_losses(heads, cache: RoiFeatureCache, images: torch.Tensor, distill: bool):
    device = next(heads.parameters()).device
    rows = cache.proposal_rows(images)
    proposals = cache.proposals(rows).to(device)
    features = cache.proposal_features[rows].to(device).float()
    if not distill:
        return heads.pooled_box_losses(features, [proposals])
    regions = cache.region_rows(images)
    return heads.pooled_box_losses(
        features,
        [proposals],
        cache.region_features[regions].to(device).float(),
        cache.teacher[regions].to(device),
        cache.region_valid[regions].to(device),
    )


def train_heads_on_cache(
    model,
    cache: RoiFeatureCache,
    *,
    epochs: int,
    images_per_batch: int,
    base_lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> List[Dict[str, float]]:
    """
    Train ``model``'s heads (:func:`head_parameters`) for ``epochs`` passes over ``cache``,
    ``images_per_batch`` images per step (their proposals and regions together), SGD with
    a 5% warm-up and a cosine decay. The distillation loss is used when the model's
    ``IMAGE_LOSS_WEIGHT`` > 0 (the cache must then hold regions). The rest of the model
    is not changed. Returns each epoch's mean losses.
    """
    heads = model.roi_heads
    distill = heads.image_loss_weight > 0
    if distill and not cache.has_regions:
        raise ValueError(
            "MODEL.VILD.IMAGE_LOSS_WEIGHT > 0 but the RoI feature cache holds no distillation "
            f"regions (computed from {cache.source}): cache it with the region store set"
        )
    params = head_parameters(model)
    optimizer = torch.optim.SGD(params, lr=base_lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(cache.num_images / images_per_batch)
    total = epochs * steps_per_epoch
    warmup = max(1, total // 20)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    history, step, t0 = [], 0, time.time()
    with EventStorage():  # the box losses log their statistics
        for epoch in range(epochs):
            sums: Dict[str, float] = {}
            order = torch.randperm(cache.num_images, generator=generator)
            for images in order.split(images_per_batch):
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(step, total, base_lr, warmup)
                losses = _batch_losses(heads, cache, images, distill)
                optimizer.zero_grad()
                sum(losses.values()).backward()
                optimizer.step()
                step += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v.item() / steps_per_epoch
            history.append(sums)
            shown = "  ".join(f"{k}: {v:.4f}" for k, v in sums.items())
            logger.info(f"epoch {epoch + 1}/{epochs}  {shown}  ({time.time() - t0:.0f}s)")
    model.eval()
    return history
