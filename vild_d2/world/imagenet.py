"""
RoI-classification pretraining of a detector's recognition path: the stand-in for
ImageNet initialisation where no pretrained backbone exists (the shapes world).

The detector's own backbone (with its FPN), box RoI pooler and box head, plus a linear
classifier over whatever classes the caller labels (the shapes world's tool: the 8 shapes,
or the base categories), are trained with AdamW on object crops: each crop
is one jittered, context-enlarged box resampled to ``crop_size`` pixels (the teacher's
crop, :func:`vild_d2.teacher.region_encoder.crop_batch`), and the RoI is the object's box
inside the crop. The result loads into the full detector with ``MODEL.WEIGHTS`` (backbone
and box head; the RPN, box predictor and mask head start fresh).

What the labels may be is the caller's choice, as ImageNet's are on LVIS: they must never
be the novel *categories* a ViLD model is tested on.
"""

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from tqdm import tqdm

from ..engine.precision import autocast
from ..teacher.region_encoder import central_squares, crop_batch
from .teacher_training import AdamWSteps, jitter_boxes, scale_and_clip

__all__ = ["RoIClassifier", "pretrain_roi_classifier", "roi_top1_accuracy"]


class RoIClassifier(nn.Module):
    """
    A detector's recognition path: ``backbone`` -> ``box_pooler`` -> ``box_head`` of the
    detector built from ``cfg``, then a linear layer over ``num_classes`` categories.
    """

    def __init__(self, cfg, num_classes: int):
        super().__init__()
        detector = build_model(cfg)
        self.in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        self.backbone = detector.backbone
        self.box_pooler = detector.roi_heads.box_pooler
        self.box_head = detector.roi_heads.box_head
        self.classifier = nn.Linear(self.box_head.output_shape.channels, num_classes)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(1, 3, 1, 1))
        self.bgr = cfg.INPUT.FORMAT == "BGR"
        self.to(cfg.MODEL.DEVICE)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] RGB in [0, 255] -> the detector's normalised input."""
        x = rgb.flip(1) if self.bgr else rgb
        return (x - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor, boxes: List[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            images: [N, 3, H, W] normalised (:meth:`normalize`).
            boxes: per image [k_i, 4] XYXY pixels.

        Returns:
            [sum k_i, num_classes] logits.
        """
        features = self.backbone(images)
        rois = self.box_pooler([features[f] for f in self.in_features], [Boxes(b) for b in boxes])
        return self.classifier(self.box_head(rois))

    def detector_state_dict(self) -> Dict[str, torch.Tensor]:
        """The weights under the detector's own names (``backbone.*``, ``roi_heads.box_head.*``)."""
        state = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        state.update({f"roi_heads.box_head.{k}": v for k, v in self.box_head.state_dict().items()})
        return state


def _object_in_crop(objects: torch.Tensor, crops: torch.Tensor, size: int) -> torch.Tensor:
    """[n, 4] XYXY object boxes in the pixels of their [n, 4] crop boxes' central squares."""
    squares = central_squares(crops)
    scale = size / (squares[:, 2] - squares[:, 0])
    return ((objects - squares[:, [0, 1, 0, 1]]) * scale[:, None]).clamp(0, size)


def _checked_owners(images: List[torch.Tensor], boxes: List[torch.Tensor]) -> torch.Tensor:
    """[sum n_i] the image index of each box; ValueError for images of several sizes, no box."""
    if len({tuple(im.shape) for im in images}) != 1:
        raise ValueError("pretrain_roi_classifier needs images of one size (they are stacked)")
    owners = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(boxes)])
    if len(owners) == 0:
        raise ValueError("no labelled boxes to pretrain on")
    return owners


def pretrain_roi_classifier(
    model: RoIClassifier,
    images: List[torch.Tensor],
    boxes: List[torch.Tensor],
    labels: List[torch.Tensor],
    *,
    steps: int = 300,
    batch_size: int = 128,
    crop_size: int = 64,
    context: Sequence[float] = (1.0, 2.0),
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    dtype: Optional[torch.dtype] = None,
) -> List[Dict[str, float]]:
    """
    Train ``model`` in place on crops of labelled objects (``dtype``: the forward pass
    under autocast in it, e.g. bfloat16; None: float32).

    Args:
        images: per image a [3, H, W] uint8 RGB tensor, all of one size.
        boxes: per image [n_i, 4] XYXY pixels.
        labels: per image [n_i] int64 class indices in [0, num_classes).
        steps, batch_size, lr, weight_decay: AdamW, cosine schedule with 5% warm-up.
        crop_size: side of each crop, pixels.
        context: each crop is its jittered box enlarged by a factor drawn from this range.

    Returns:
        per 50 steps (and the last): step, loss, training top-1, seconds.
    """
    owners = _checked_owners(images, boxes)
    all_boxes = torch.cat([b.float().reshape(-1, 4) for b in boxes])
    all_labels = torch.cat(labels)
    stacked = torch.stack(images)
    height, width = stacked.shape[-2:]
    device = model.pixel_mean.device
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc="RoI pretraining", unit="step", disable=not progress)
    training = AdamWSteps(model.parameters(), steps, lr, weight_decay, bar)
    for step in bar:
        chosen = torch.randint(len(owners), (batch_size,), generator=gen)
        used, index = owners[chosen].unique(return_inverse=True)
        enlarge = context[0] + (context[1] - context[0]) * torch.rand(batch_size, generator=gen)
        crops = scale_and_clip(jitter_boxes(all_boxes[chosen], gen), enlarge, height, width)
        x = model.normalize(
            crop_batch(stacked[used], crops, index, crop_size, normalize=False) * 255.0
        ).to(device)
        rois = _object_in_crop(all_boxes[chosen], crops, crop_size).to(device)
        with autocast(device, dtype):
            logits = model(x, list(rois[:, None, :])).float()
        targets = all_labels[chosen].to(device)
        training.take(step, F.cross_entropy(logits, targets), logits, targets)
    model.eval()
    return training.history


@torch.no_grad()
def roi_top1_accuracy(
    model: RoIClassifier,
    images: List[torch.Tensor],
    boxes: List[torch.Tensor],
    labels: List[torch.Tensor],
) -> float:
    """
    Top-1 (%) of ``model`` on whole images with the given boxes as RoIs (the detector's
    view, no crop). ``labels`` are class indices; boxes labelled -1 are skipped.
    """
    model.eval()
    device = model.pixel_mean.device
    right = total = 0
    for image, b, lab in zip(images, boxes, labels):
        keep = lab >= 0
        if not keep.any():
            continue
        x = model.normalize(image[None].float().to(device))
        pred = model(x, [b[keep].float().to(device)]).argmax(1).cpu()
        right += int((pred == lab[keep]).sum())
        total += int(keep.sum())
    return 100.0 * right / max(total, 1)
