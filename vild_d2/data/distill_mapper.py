"""
DistillDatasetMapper: detectron2's DatasetMapper that also attaches each training image's
distillation regions and teacher embeddings from a region store, moved by the same
geometric transforms as the image.
"""

import copy
from typing import Optional, Tuple, Union

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.data.transforms import TransformList
from detectron2.structures import Boxes, Instances

from ..utils.boxes import clip_boxes_xyxy
from .augmentation import build_test_augmentation, train_mapper_kwargs
from .images import read_image
from .region_store import RegionStore, RegionStoreError

__all__ = ["DistillDatasetMapper", "transform_regions"]


def transform_regions(
    boxes: np.ndarray,
    transforms: TransformList,
    image_shape,
    min_visible: float,
) -> Tuple[np.ndarray, np.ndarray]:
    """
    Move original-image boxes into the network-input image and choose the ones to keep.

    Args:
        boxes: [n, 4] XYXY, original image pixels.
        transforms: the transforms applied to the image (resize, flip, crop, pad, ...).
        image_shape: (height, width) of the transformed image.
        min_visible: a region is kept if its part inside the image has positive area and
            at least this fraction of its transformed area (0 keeps every region that
            has not left the image).

    Returns:
        (boxes [k, 4] float32, clipped to the image; keep [n] bool).
    """
    moved = transforms.apply_box(np.asarray(boxes, dtype=np.float32)).astype(np.float32)
    moved = moved.reshape(-1, 4)
    clipped = clip_boxes_xyxy(moved, image_shape)
    full = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (inside > 0) & (inside >= min_visible * full)
    return clipped[keep], keep


class DistillDatasetMapper(DatasetMapper):
    """
    detectron2's DatasetMapper with vild_d2's training augmentation, which in training
    also adds ``dataset_dict["distill_regions"]`` when given a region store: ``Instances``
    of the network-input size with ``boxes`` (Boxes [m, 4], XYXY network-input pixels)
    and ``embeddings`` (float16 [m, D]) — the contract of :mod:`vild_d2.data.distill_regions`.
    Regions that leave the image (or keep less than ``min_visible`` of their area) are
    dropped with their embeddings; the first ``num_regions`` survivors (the store keeps
    the proposals' score order) are kept. Inference is DatasetMapper's with vild_d2's test
    resize (INPUT.TF1_RESIZE_TEST).

    Images without annotations (e.g. only novel objects, removed from an open-vocabulary
    training split) are mapped too; detectron2 v0.6 fails on them when boxes are
    recomputed from cropped masks (large-scale jitter).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        region_store: Union[RegionStore, str, None] = None,
        num_regions: int = 300,
        min_visible: float = 0.5,
        **kwargs,
    ):
        """
        Args:
            region_store: a RegionStore or its folder, holding every training image; None
                (or "") attaches no regions.
            num_regions: M, at most this many regions per image.
            min_visible: see :func:`transform_regions`.
            kwargs: DatasetMapper's arguments.
        """
        super().__init__(is_train, **kwargs)
        if isinstance(region_store, str):
            region_store = RegionStore(region_store) if region_store else None
        self.region_store = region_store
        self.num_regions = num_regions
        self.min_visible = min_visible

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, region_store: Optional[RegionStore] = None):
        if not is_train:  # no regions: the store holds training images only
            return dict(super().from_config(cfg, False), augmentations=build_test_augmentation(cfg))
        ret = train_mapper_kwargs(cfg)
        ret["region_store"] = region_store or cfg.DATASETS.REGION_STORE_TRAIN
        ret["num_regions"] = cfg.MODEL.VILD.NUM_DISTILL_REGIONS
        ret["min_visible"] = cfg.INPUT.DISTILL_MIN_VISIBLE
        return ret

    def __call__(self, dataset_dict):
        """
        detectron2's DatasetMapper steps (read, augment, proposals, annotations), with the
        image read by vild_d2's :func:`read_image` (16-bit images too) and no semantic
        segmentation; in training the distillation regions are attached.
        """
        d = copy.deepcopy(dataset_dict)  # modified below; the dataset's dict stays as it is
        if self.is_train and "annotations" not in d:
            d["annotations"] = []  # so the regions are attached
        image = read_image(d["file_name"], format=self.image_format)
        utils.check_image_size(d, image)
        augmented = T.AugInput(image)
        transforms = self.augmentations(augmented)
        image_shape = augmented.image.shape[:2]
        d["image"] = torch.as_tensor(np.ascontiguousarray(augmented.image.transpose(2, 0, 1)))
        if self.proposal_topk is not None:
            utils.transform_proposals(d, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            d.pop("annotations", None)
            return d
        self._transform_annotations(d, transforms, image_shape)
        return d

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        recompute = self.recompute_boxes
        if not any(a.get("iscrowd", 0) == 0 for a in dataset_dict["annotations"]):
            self.recompute_boxes = False  # no masks to recompute boxes from
        try:
            super()._transform_annotations(dataset_dict, transforms, image_shape)
        finally:
            self.recompute_boxes = recompute
        if self.region_store is not None:
            dataset_dict["distill_regions"] = self.distill_regions(
                dataset_dict, transforms, image_shape
            )

    def distill_regions(self, dataset_dict, transforms, image_shape) -> Instances:
        """The image's regions from the store, transformed like the image (see class doc)."""
        image_id = dataset_dict["image_id"]
        stored = self.region_store.get(image_id)
        size = (dataset_dict.get("height", stored.height), dataset_dict.get("width", stored.width))
        if size != (stored.height, stored.width):
            raise RegionStoreError(
                f"region store {self.region_store.store_dir}: image id {image_id} "
                f"({dataset_dict.get('file_name')}) is {size[0]}x{size[1]} in the dataset but "
                f"{stored.height}x{stored.width} in the store (computed from other images?)"
            )
        boxes, keep = transform_regions(stored.boxes, transforms, image_shape, self.min_visible)
        rows = np.flatnonzero(keep)[: self.num_regions]
        regions = Instances(tuple(image_shape))
        regions.boxes = Boxes(torch.from_numpy(boxes[: len(rows)]))
        regions.embeddings = torch.from_numpy(np.asarray(stored.embeddings[rows]))
        return regions
