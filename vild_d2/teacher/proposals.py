"""
Proposals for the region precompute, as callables ``(dataset dict, RGB image [H, W, 3]
uint8) -> [n, 4] XYXY boxes in original-image pixels, best first, after NMS``:

- :class:`FileProposals`: a detectron2 proposals file (the pickle that
  ``DATASETS.PROPOSAL_FILES_*`` reads: ``ids``, ``boxes``, ``objectness_logits`` and
  optionally ``bbox_mode``).
- :class:`RPNProposals`: the region proposal network of a trained detectron2 model
  (ViLD uses a class-agnostic RPN trained on the base categories, e.g.
  ``configs/LVIS-OV/rpn_R_50_FPN.yaml``; any model with a ``proposal_generator`` works).
"""

import logging
import pickle
from typing import Dict, Iterable, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import BoxMode, ImageList
from detectron2.utils.env import seed_all_rng
from detectron2.utils.file_io import PathManager
from torchvision.ops import nms

from ..data.augmentation import build_test_augmentation
from ..errors import VildD2Error

__all__ = ["ProposalError", "FileProposals", "RPNProposals", "nms_order"]

logger = logging.getLogger(__name__)


class ProposalError(VildD2Error, ValueError):
    """Proposals that cannot be used; the message names the file or image id."""


def nms_order(boxes: np.ndarray, scores: np.ndarray, nms_thresh: float) -> np.ndarray:
    """
    Args:
        boxes: [n, 4] XYXY; scores: [n].
        nms_thresh: IoU threshold; >= 1 keeps every box.

    Returns:
        [k] indices of the kept boxes, highest score first.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    b, s = torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32)
    if nms_thresh >= 1:
        return torch.argsort(s, descending=True, stable=True).numpy()
    return nms(b, s, nms_thresh).numpy()


class FileProposals:
    """Boxes of a detectron2 proposals pickle, sorted by objectness, NMS'd at ``nms_thresh``."""

    def __init__(self, path: str, nms_thresh: float = 0.7):
        with PathManager.open(path, "rb") as f:
            try:
                data = pickle.load(f, encoding="latin1")
            except Exception as e:
                raise ProposalError(f"{path}: not a readable proposals pickle ({e})") from None
        missing = [k for k in ("ids", "boxes", "objectness_logits") if k not in data]
        if missing:
            raise ProposalError(f"{path}: a detectron2 proposals file needs keys {missing}")
        mode = data.get("bbox_mode", BoxMode.XYXY_ABS)
        self.path, self.nms_thresh = path, nms_thresh
        self._by_id: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        for i, (image_id, boxes, logits) in enumerate(
            zip(data["ids"], data["boxes"], data["objectness_logits"])
        ):
            boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            logits = np.asarray(logits, dtype=np.float32).reshape(-1)
            if len(boxes) != len(logits):
                raise ProposalError(
                    f"{path}: image id {image_id} has {len(boxes)} boxes but "
                    f"{len(logits)} objectness logits"
                )
            boxes = BoxMode.convert(boxes, mode, BoxMode.XYXY_ABS) if len(boxes) else boxes
            key = _id_key(image_id)
            if key in self._by_id:
                raise ProposalError(f"{path}: image id {image_id} appears twice")
            self._by_id[key] = (np.asarray(boxes, dtype=np.float32), logits)

    def check_covers(self, image_ids: Iterable) -> None:
        """ProposalError naming the first image id that has no proposals in the file."""
        missing = [i for i in image_ids if _id_key(i) not in self._by_id]
        if missing:
            raise ProposalError(
                f"{self.path}: no proposals for {len(missing)} image(s), e.g. image id {missing[0]}"
            )

    def __call__(self, dataset_dict: dict, image: np.ndarray) -> np.ndarray:
        key = _id_key(dataset_dict["image_id"])
        if key not in self._by_id:
            raise ProposalError(
                f"{self.path}: no proposals for image id {dataset_dict['image_id']}"
            )
        boxes, logits = self._by_id[key]
        return boxes[nms_order(boxes, logits, self.nms_thresh)]


def _id_key(image_id):
    # Proposal files written by detectron2 keep ids as the dataset had them (int or str).
    return str(image_id)


class RPNProposals:
    """
    The proposals of a detectron2 model's RPN on one image at the model's test size, moved
    back to original pixels; RPN NMS (``MODEL.RPN.NMS_THRESH``) and
    ``POST_NMS_TOPK_TEST`` apply, best first.
    """

    def __init__(self, cfg):
        if (
            cfg.SEED >= 0
        ):  # the same initial weights in every worker for weights MODEL.WEIGHTS lacks
            seed_all_rng(cfg.SEED)
        self.model = build_model(cfg).eval()
        if getattr(self.model, "proposal_generator", None) is None:
            raise ProposalError(f"{cfg.MODEL.META_ARCHITECTURE} has no proposal generator (RPN)")
        if not cfg.MODEL.WEIGHTS:
            logger.warning(
                "MODEL.WEIGHTS is empty: the RPN's proposals are those of random weights"
            )
        _load_without_roi_heads(self.model, cfg.MODEL.WEIGHTS)
        self.resize = build_test_augmentation(cfg)[0]
        self.input_format = cfg.INPUT.FORMAT

    @torch.no_grad()
    def __call__(self, dataset_dict: dict, image: np.ndarray, with_scores: bool = False):
        """
        Returns:
            boxes [P, 4] XYXY original pixels, best first; with ``with_scores`` also their
            objectness logits [P].
        """
        h, w = image.shape[:2]
        pixels = image[:, :, ::-1] if self.input_format == "BGR" else image
        pixels = self.resize.get_transform(pixels).apply_image(pixels)
        tensor = torch.as_tensor(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        m = self.model  # ProposalNetwork and GeneralizedRCNN normalise the same way
        tensor = (tensor.to(m.pixel_mean.device) - m.pixel_mean) / m.pixel_std
        images = ImageList.from_tensors([tensor], m.backbone.size_divisibility)
        features = self.model.backbone(images.tensor)
        proposals, _ = self.model.proposal_generator(images, features, None)
        result = proposals[0]
        result = result[result.objectness_logits > float("-inf")]  # the official RPN's padding
        result = detector_postprocess(result, h, w)
        boxes = result.proposal_boxes.tensor.cpu().numpy()
        return (boxes, result.objectness_logits.cpu().numpy()) if with_scores else boxes


def _load_without_roi_heads(model, weights: str) -> None:
    """
    Load ``weights`` into ``model``; a model without ROI heads (an RPN-only config) skips the
    checkpoint's ``roi_heads.*`` tensors, which it has no use for, instead of listing each
    as unused. Missing keys are still reported, as detectron2 does.
    """
    checkpointer = DetectionCheckpointer(model)
    if not weights or hasattr(model, "roi_heads"):
        checkpointer.load(weights)
        return
    checkpoint = checkpointer._load_file(weights)  # detectron2's reader (.pth, .pkl, ...)
    state = checkpoint.get("model", checkpoint)
    for key in [k for k in state if k.startswith("roi_heads.")]:
        del state[key]
    checkpointer._load_model(checkpoint)
