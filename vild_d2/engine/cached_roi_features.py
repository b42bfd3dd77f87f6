"""
Pooled RoI features of a frozen detector, cached once for head training
(:mod:`vild_d2.engine.head_training`).

For every training image (one pass of the training mapper: its resize and flip, and its
distillation regions from the region store) the frozen backbone and RPN run once; the
ROI heads' own sampling (``label_and_sample_proposals``: BATCH_SIZE_PER_IMAGE proposals,
POSITIVE_FRACTION foreground, the ground truth appended) picks the proposals, and the box
pooler's features of those proposals and of the image's first M distillation regions
are kept, with the targets the box losses need. A box head then trains on them for
many epochs at the cost of a few fully connected layers per region.

A departure from the official recipe, which trains the whole detector end to end: here
the backbone, RPN and mask head stay as they are, each image has one fixed augmentation
and one fixed sample of proposals, and the RPN's test-time proposals are sampled (the
model is in eval mode).
"""

import logging
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import torch
from detectron2.data import build_detection_test_loader
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from tqdm import tqdm

from ..data.build import training_dataset_and_mapper
from ..utils.atomic_io import atomic_write

__all__ = ["RoiFeatureCache", "CacheSource", "build_roi_feature_cache", "load_roi_feature_cache"]

logger = logging.getLogger(__name__)


@dataclass
class CacheSource:
    """What a cache was computed from; a cache is reused only for the same source."""

    weights: str  # the frozen detector's checkpoint
    datasets: List[str]  # DATASETS.TRAIN
    region_store: str  # DATASETS.REGION_STORE_TRAIN ("" without distillation)
    num_regions: int  # M: distillation regions per image (0 without)
    proposals_per_image: int  # MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE
    positive_fraction: float  # MODEL.ROI_HEADS.POSITIVE_FRACTION
    seed: int  # SEED: the augmentation's and the sampling's

    @classmethod
    def of(cls, cfg) -> "CacheSource":
        store = cfg.DATASETS.REGION_STORE_TRAIN
        return cls(
            weights=os.path.abspath(cfg.MODEL.WEIGHTS),
            datasets=list(cfg.DATASETS.TRAIN),
            region_store=os.path.abspath(store) if store else "",
            num_regions=cfg.MODEL.VILD.NUM_DISTILL_REGIONS if store else 0,
            proposals_per_image=cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
            positive_fraction=cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION,
            seed=cfg.SEED,
        )

    def serves(self, other: "CacheSource") -> bool:
        """This cache can train ``other``'s heads: the same source, or ``other`` needs no
        distillation regions (ViLD-text) and the rest is the same."""
        if self == other:
            return True
        return other.num_regions == 0 and asdict(self) == dict(
            asdict(other), region_store=self.region_store, num_regions=self.num_regions
        )


@dataclass
class RoiFeatureCache:
    """
    Flat tensors over all images; image i's rows are ``start[i]:start[i + 1]``.

    proposal_features: [P, C, S, S] float16, pooled features of the sampled proposals.
    proposal_start: [n + 1] int64.
    proposal_boxes, gt_boxes: [P, 4] float32, XYXY network-input pixels.
    gt_classes: [P] int64 (the number of classes = background).
    region_features: [R, C, S, S] float16, of the distillation regions (R = 0 without).
    region_start: [n + 1] int64.
    teacher: [R, D] float32, the teacher's embeddings of those regions.
    region_valid: [R] bool.
    source: where it came from (:class:`CacheSource` as a dict).
    """

    proposal_features: torch.Tensor
    proposal_start: torch.Tensor
    proposal_boxes: torch.Tensor
    gt_boxes: torch.Tensor
    gt_classes: torch.Tensor
    region_features: torch.Tensor
    region_start: torch.Tensor
    teacher: torch.Tensor
    region_valid: torch.Tensor
    source: Dict

    @property
    def num_images(self) -> int:
        return len(self.proposal_start) - 1

    @property
    def has_regions(self) -> bool:
        return len(self.region_features) > 0

    def proposals(self, rows: torch.Tensor) -> Instances:
        """The sampled proposals at ``rows`` (from :meth:`proposal_rows`), for the box losses."""
        out = Instances((0, 0))  # the losses read no image size
        out.proposal_boxes = Boxes(self.proposal_boxes[rows])
        out.gt_boxes = Boxes(self.gt_boxes[rows])
        out.gt_classes = self.gt_classes[rows]
        return out

    def proposal_rows(self, images: torch.Tensor) -> torch.Tensor:
        return self._rows(self.proposal_start, images)

    def region_rows(self, images: torch.Tensor) -> torch.Tensor:
        return self._rows(self.region_start, images)

    @staticmethod
    def _rows(start: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.arange(start[i], start[i + 1]) for i in images.tolist()])

    def save(self, path: str) -> None:
        """Write the cache to ``path`` atomically."""
        atomic_write(path, lambda f: torch.save(asdict(self), f))


def load_roi_feature_cache(path: str, wanted: CacheSource) -> Optional[RoiFeatureCache]:
    """The cache at ``path`` if it exists and serves ``wanted``; else None (and why, logged)."""
    if not os.path.isfile(path):
        return None
    cache = RoiFeatureCache(**torch.load(path, map_location="cpu"))
    if not CacheSource(**cache.source).serves(wanted):
        logger.warning(f"{path} was computed from {cache.source}, not {asdict(wanted)}: recomputed")
        return None
    return cache


@torch.no_grad()
def _cache_image(model, batched_input: dict, num_regions: int) -> dict:
    """One image's sampled proposals and distillation regions, pooled."""
    heads = model.roi_heads
    images = model.preprocess_image([batched_input])
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features)
    target = batched_input["instances"].to(model.device)
    sampled = heads.label_and_sample_proposals(proposals, [target])[0]
    feats = [features[f] for f in heads.box_in_features]
    boxes = sampled.proposal_boxes.tensor
    entry = {
        "proposal_features": heads.box_pooler(feats, [sampled.proposal_boxes]).half().cpu(),
        "proposal_boxes": boxes.cpu(),
        "gt_boxes": (sampled.gt_boxes.tensor if sampled.has("gt_boxes") else boxes).cpu(),
        "gt_classes": sampled.gt_classes.cpu(),
    }
    if num_regions:
        regions = batched_input["distill_regions"][:num_regions]
        valid = regions.valid if regions.has("valid") else torch.ones(len(regions), dtype=bool)
        pooled = heads.box_pooler(feats, [regions.boxes.to(model.device)])
        entry.update(
            region_features=pooled.half().cpu(),
            teacher=regions.embeddings.float(),
            region_valid=valid,
        )
    return entry


def _flatten(entries: List[dict], source: CacheSource, pooled_shape) -> RoiFeatureCache:
    def cat(key, empty_shape, dtype):
        rows = [e[key] for e in entries if key in e]
        return torch.cat(rows) if rows else torch.zeros(empty_shape, dtype=dtype)

    def starts(key):
        counts = [len(e[key]) if key in e else 0 for e in entries]
        return torch.tensor([0] + counts).cumsum(0)

    return RoiFeatureCache(
        proposal_features=cat("proposal_features", (0, *pooled_shape), torch.float16),
        proposal_start=starts("proposal_features"),
        proposal_boxes=cat("proposal_boxes", (0, 4), torch.float32),
        gt_boxes=cat("gt_boxes", (0, 4), torch.float32),
        gt_classes=cat("gt_classes", (0,), torch.int64),
        region_features=cat("region_features", (0, *pooled_shape), torch.float16),
        region_start=starts("region_features"),
        teacher=cat("teacher", (0, 0), torch.float32),
        region_valid=cat("region_valid", (0,), torch.bool),
        source=asdict(source),
    )


def build_roi_feature_cache(cfg, model) -> RoiFeatureCache:
    """
    Run the frozen ``model`` (a ViLD detector built from ``cfg``) over ``cfg``'s training
    images with the training mapper (and ``cfg``'s region store) and cache what its box
    heads' losses need. About one inference pass over the images; shows a progress bar.
    """
    source = CacheSource.of(cfg)
    dataset, mapper = training_dataset_and_mapper(cfg)
    loader = build_detection_test_loader(
        dataset, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
    )
    torch.manual_seed(cfg.SEED)  # the sampling of proposals
    was_training = model.training
    model.eval()
    entries = []
    with EventStorage():  # the sampling logs its statistics
        for batch in tqdm(loader, desc="caching RoI features", unit="img"):
            entries.append(_cache_image(model, batch[0], source.num_regions))
    model.train(was_training)
    res = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
    channels = entries[0]["proposal_features"].shape[1] if entries else 0
    return _flatten(entries, source, (channels, res, res))
