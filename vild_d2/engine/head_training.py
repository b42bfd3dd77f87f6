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
from typing import Dict, List, Optional

import torch
from detectron2.utils.events import EventStorage

from .cached_roi_features import RoiFeatureCache
from .optimizers import fused_if_supported
from .precision import autocast

__all__ = ["head_parameters", "load_text_head", "train_heads_on_cache"]

logger = logging.getLogger(__name__)


TEXT_HEAD_PREFIXES = ("roi_heads.box_head.", "roi_heads.box_predictor.")  # in a checkpoint
IMAGE_HEAD_PREFIX = "roi_heads.image_head."  # ViLD-ensemble's image head, in a checkpoint


def head_parameters(model, text_head: bool = True) -> List[torch.nn.Parameter]:
    """
    The parameters head training updates: box head, box predictor and image head; with
    ``text_head=False`` the image head's only (ViLD-ensemble's, the text head kept as it is).
    """
    heads = model.roi_heads
    image_head = getattr(heads, "image_head", None)
    modules = [heads.box_head, heads.box_predictor] if text_head else []
    if image_head is not None:
        modules.append(image_head)
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def load_text_head(model, path: str) -> None:
    """
    Set ViLD-ensemble ``model``'s text head (box head and box predictor) from the trained
    checkpoint at ``path`` (a ViLD-text's). On a frozen detector the ensemble's text head
    trains exactly as a ViLD-text head does (the same losses on the same features), so it
    is taken, not trained again: only the image head is left to train. The image head keeps
    the start it has (from MODEL.WEIGHTS, as ViLD's head): it is trained by L_image alone,
    never by the text head's cross-entropy. Raises ValueError naming ``path`` when its heads
    are missing or of other shapes.
    """
    heads = model.roi_heads
    if getattr(heads, "image_head", None) is None:
        raise ValueError(f"a text head from {path} is for ViLD-ensemble (MODEL.VILD.ENSEMBLE)")
    state = torch.load(path, map_location="cpu")
    state = state.get("model", state)
    own = model.state_dict()
    wanted = [k for k in own if k.startswith(TEXT_HEAD_PREFIXES)]
    wrong = [k for k in wanted if k not in state or state[k].shape != own[k].shape]
    if wrong:
        raise ValueError(
            f"{path}: no text head of this model's shapes ({len(wrong)} of {len(wanted)} tensors "
            f"missing or of other shapes, e.g. {wrong[0]})"
        )
    # the image head's own tensors go along: without them ViLDROIHeads' load hook would
    # start the image head's box head as a copy of the text head's trained one
    image_head = {k: v for k, v in own.items() if k.startswith(IMAGE_HEAD_PREFIX)}
    model.load_state_dict({**{k: state[k] for k in wanted}, **image_head}, strict=False)


def _lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``base_lr`` to 0."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch_losses(
    heads, cache: RoiFeatureCache, images: torch.Tensor, distill: bool, text_head: bool
):
    device = next(heads.parameters()).device
    if not text_head:  # ViLD-ensemble's image head alone: its distillation regions
        regions = cache.region_rows(images)
        return heads.image_head_losses(
            cache.region_features[regions].to(device).float(),
            cache.teacher[regions].to(device),
            cache.region_valid[regions].to(device),
        )
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


def _check_trainable(heads, cache: RoiFeatureCache, text_head: bool) -> bool:
    """Whether ``heads`` distill (ValueError when ``cache`` cannot train them)."""
    distill = heads.image_loss_weight > 0
    if not text_head and (not distill or getattr(heads, "image_head", None) is None):
        raise ValueError("training the image head alone needs ViLD-ensemble with distillation")
    if distill and not cache.has_regions:
        raise ValueError(
            "MODEL.VILD.IMAGE_LOSS_WEIGHT > 0 but the RoI feature cache holds no distillation "
            f"regions (computed from {cache.source}): cache it with the region store set"
        )
    return distill


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
    text_head: bool = True,
    dtype: Optional[torch.dtype] = None,
) -> List[Dict[str, float]]:
    """
    Train ``model``'s heads (:func:`head_parameters`) for ``epochs`` passes over ``cache``,
    ``images_per_batch`` images per step (their proposals and regions together), SGD with
    a 5% warm-up and a cosine decay. The distillation loss is used when the model's
    ``IMAGE_LOSS_WEIGHT`` > 0 (the cache must then hold regions). With ``text_head=False``
    (ViLD-ensemble after :func:`load_text_head`) only the image head trains, on the
    distillation regions alone; the rest of the model is not changed. ``dtype``: autocast's
    (``autocast_dtype(cfg)``; None: float32). Returns each epoch's mean losses.
    """
    heads = model.roi_heads
    distill = _check_trainable(heads, cache, text_head)
    params = head_parameters(model, text_head)
    optimizer = fused_if_supported(
        torch.optim.SGD, params, lr=base_lr, momentum=momentum, weight_decay=weight_decay
    )
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
                with autocast(next(heads.parameters()).device, dtype):
                    losses = _batch_losses(heads, cache, images, distill, text_head)
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
