"""
Which boxes the official ViLD keeps: the non-maximum suppression of its proposals
(``sorted_non_max_suppression_padded``) and of its detections
(``tf.image.non_max_suppression_padded``, ``nms_version: v1``), with their rules made
explicit here (facts of the official code, reproduced with torchvision's NMS):

- **Order.** Boxes are visited best first; equal scores keep the lower index first
  (``tf.nn.top_k``). torchvision's ``nms`` sorts scores itself without a defined order for
  ties, so it is given strictly decreasing ranks instead of the scores.
- **Threshold.** A box is suppressed by an earlier kept box with IoU >= the threshold
  (as float32); torchvision suppresses IoU > t, so it gets the float32 just below t.
  The official IoU adds 1e-8 to the union, which changes nothing in float32 unless the
  union is under 0.25 px²; that term is not reproduced.
- **Padding.** A box with no coordinate above 0 (after clipping: all four 0, a box in the
  image's top-left corner) is padding: never kept, suppressing nothing.
- **Detections only.** Scores at or below the score threshold are padding too; each
  class keeps at most ``max_total`` boxes from its ``pre_nms_per_class`` best; the classes
  are merged best first, equal scores by class index, then by rank in the class. When the
  best box of a class has x1 > x2 (a box under 1 px wide decodes inverted with the legacy
  -1), TensorFlow swaps x1 and x2 of *every* box of that class before its IoUs (its
  "canonicalize coordinates" looks only at the first box); the same for y.

Every function is TorchScript-compatible (the exported models use them).
"""

from typing import List, Tuple

import torch
from torchvision.ops import nms

__all__ = ["is_padding", "ordered_nms", "official_detections", "PRE_NMS_PER_CLASS"]

# the official postprocess's pre_nms_num_boxes: candidates per class before its NMS
PRE_NMS_PER_CLASS = 1000


def is_padding(boxes: torch.Tensor) -> torch.Tensor:
    """[N] bool: the [N, 4] boxes with no coordinate above 0, which the official NMS drops."""
    return ~(boxes > 0).any(dim=1)


def _just_below(threshold: float) -> float:
    """The largest float32 below float32(threshold): IoU > it is IoU >= the threshold."""
    t = torch.tensor(threshold, dtype=torch.float32)
    return float(torch.nextafter(t, torch.tensor(float("-inf"))).item())


def ordered_nms(boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """
    Greedy NMS of boxes given in their order, best first, by the official rules (above).

    Args:
        boxes: [N, 4] XYXY.
        iou_threshold: a box whose IoU with an earlier kept box is >= this is dropped.

    Returns:
        the indices of the kept boxes, ascending (that is, in order) [K] int64.
    """
    valid = torch.nonzero(~is_padding(boxes)).flatten()
    # float32 ranks are exact up to 2^24 boxes
    ranks = torch.arange(valid.numel(), 0, -1, dtype=torch.float32, device=boxes.device)
    keep = nms(boxes[valid].float(), ranks, _just_below(iou_threshold))
    return valid[torch.sort(keep)[0]]


def _per_class_keep(
    boxes: torch.Tensor, classes: torch.Tensor, iou_threshold: float, max_per_class: int
) -> torch.Tensor:
    """[K] bool: ordered NMS within each class of K boxes in order; at most max_per_class."""
    keep = torch.zeros(classes.shape, dtype=torch.bool, device=boxes.device)
    present: List[int] = torch.unique(classes).tolist()
    for c in present:
        members = torch.nonzero(classes == c).flatten()
        kept = ordered_nms(boxes[members], iou_threshold)[:max_per_class]
        keep[members[kept]] = True
    return keep


def _canonical_swaps(
    boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """[C] bool each: the classes whose x (y) coordinates TensorFlow swaps before its IoUs."""
    best = scores.argmax(dim=0)  # the first of equal maxima, as tf.nn.top_k
    first = boxes[best]
    counted = scores.gather(0, best[None]).squeeze(0) > score_threshold
    return counted & ~(first[:, 0] <= first[:, 2]), counted & ~(first[:, 1] <= first[:, 3])


def _in_order(flat_scores: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """
    The first candidates (flat class-major indices) of the official order, score
    descending, then class, then proposal: at least ``count``, and every one tied with
    the last (so that they are a prefix of the whole order).
    """
    values = flat_scores[candidates]
    if count < candidates.numel():
        cutoff = torch.topk(values, count, sorted=False)[0].min()
        chosen = values >= cutoff
        candidates, values = candidates[chosen], values[chosen]
    return candidates[torch.sort(values, descending=True, stable=True)[1]]


def official_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_threshold: float,
    iou_threshold: float,
    max_total: int,
    pre_nms_per_class: int = PRE_NMS_PER_CLASS,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    The official detections of one image (``_generate_detections_per_image``, rules above).

    Only as many candidates as needed are put through NMS: the best ones in the official
    order, doubled until ``max_total`` survive (a box's fate depends only on the boxes
    before it, so the result is that of all R x C candidates).

    Args:
        boxes: [R, 4] decoded, clipped class-agnostic boxes, XYXY.
        scores: [R, C] class scores (no background column).
        score_threshold: scores at or below it are dropped.
        iou_threshold: of the per-class NMS.
        max_total: detections kept, and the most per class.
        pre_nms_per_class: candidates of each class before its NMS.

    Returns:
        boxes [K, 4], scores [K], classes [K] int64 and proposal indices [K] int64 of the
        K <= max_total detections, in the official order.
    """
    num_proposals = scores.shape[0]
    if num_proposals > pre_nms_per_class:  # outside a class's best: not a candidate
        outside = torch.sort(scores, dim=0, descending=True, stable=True)[1][pre_nms_per_class:]
        scores = scores.scatter(0, outside, float("-inf"))
    swap_x, swap_y = _canonical_swaps(boxes, scores, score_threshold)
    valid = (scores > score_threshold) & ~is_padding(boxes)[:, None]
    flat_scores = scores.t().reshape(-1)  # class-major: class c, proposal r at c * R + r
    candidates = torch.nonzero(valid.t().reshape(-1)).flatten()
    swaps = (swap_x, swap_y)
    chosen, keep = candidates[:0], torch.zeros(0, dtype=torch.bool, device=boxes.device)
    count, searching = max(2 * max_total, 1), True
    while searching:
        chosen, keep = _survivors(
            boxes, flat_scores, candidates, count, swaps, iou_threshold, max_total
        )
        searching = int(keep.sum()) < max_total and chosen.numel() < candidates.numel()
        count *= 4
    chosen = chosen[torch.nonzero(keep).flatten()[:max_total]]
    classes, proposals = _class_and_proposal(chosen, num_proposals)
    return boxes[proposals], flat_scores[chosen], classes, proposals


def _class_and_proposal(
    flat: torch.Tensor, num_proposals: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class-major flat indices (class c, proposal r at c * R + r) -> (c, r)."""
    classes = torch.div(flat, num_proposals, rounding_mode="floor")
    return classes, flat - classes * num_proposals


def _survivors(
    boxes: torch.Tensor,
    flat_scores: torch.Tensor,
    candidates: torch.Tensor,
    count: int,
    swaps: Tuple[torch.Tensor, torch.Tensor],
    iou_threshold: float,
    max_per_class: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first candidates in the official order (at least ``count``) and which survive."""
    chosen = _in_order(flat_scores, candidates, count)
    classes, proposals = _class_and_proposal(chosen, boxes.shape[0])
    swap_x, swap_y = swaps
    swapped = _swapped(boxes[proposals], swap_x[classes], swap_y[classes])
    return chosen, _per_class_keep(swapped, classes, iou_threshold, max_per_class)


def _swapped(boxes: torch.Tensor, swap_x: torch.Tensor, swap_y: torch.Tensor) -> torch.Tensor:
    """[K, 4] boxes with x1, x2 exchanged where swap_x and y1, y2 where swap_y ([K] bool)."""
    x1 = torch.where(swap_x, boxes[:, 2], boxes[:, 0])
    x2 = torch.where(swap_x, boxes[:, 0], boxes[:, 2])
    y1 = torch.where(swap_y, boxes[:, 3], boxes[:, 1])
    y2 = torch.where(swap_y, boxes[:, 1], boxes[:, 3])
    return torch.stack((x1, y1, x2, y2), dim=1)
