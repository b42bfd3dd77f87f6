"""
Two measurements of ViLD's region embeddings outside the detector's own scoring:

* :func:`head_accuracy`: top-1 accuracy of a ViLD model's region embeddings on the
  ground-truth boxes of a dataset against its text embeddings (no background), per
  group of categories: how well distillation taught the student what the teacher knows
  (compare with the teacher's own zero-shot accuracy on the same boxes).
* :func:`clip_on_crops_detections`: the paper's "CLIP on cropped regions" baseline: the
  teacher classifies the crops (1.0x + 1.5x) of a base-trained RPN's proposals; the slow
  detector that ViLD distils into a fast one.
"""

from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image
from detectron2.structures import Boxes, BoxMode
from tqdm import tqdm

from ..data.augmentation import build_test_augmentation
from ..data.images import read_image
from ..teacher.region_encoder import encode_regions

__all__ = ["head_accuracy", "clip_on_crops_detections", "lvis_results", "RoIFeatureReader"]


def _gt_boxes(d: dict) -> np.ndarray:
    anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
    return np.array(
        [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns],
        dtype=np.float32,
    ).reshape(-1, 4)


@torch.no_grad()
def head_accuracy(
    cfg,
    model,
    dataset_dicts: Sequence[dict],
    class_embeddings: torch.Tensor,
    groups: Dict[str, Sequence[int]],
) -> Dict[str, Dict[str, float]]:
    """
    Args:
        cfg: the model's config (test resize and input format).
        model: a ViLDRCNN in eval mode.
        dataset_dicts: detectron2 dicts with ``annotations`` (contiguous category ids).
        class_embeddings: [C, D] unit-norm text embeddings of the dataset's categories.
        groups: name -> contiguous category ids (e.g. "novel", "concept"); "all" is added.

    Returns:
        per head ("head": the box predictor's embedding; for ViLD-ensemble "text head" and
        "image head"): accuracy (%) per group; if ``groups`` has "base" and "novel", also
        "base, base classes only" (accuracy on base boxes with the novel classes left out,
        as in training) and "cosine to true class" (mean over all boxes, x100).
    """
    sims, truth = _gt_box_similarities(cfg, model, dataset_dicts, class_embeddings)
    return {head: _accuracies(s, truth, groups) for head, s in sims.items()}


class RoIFeatureReader:
    """A model's pooled box-head features of given boxes of an image file, at test size."""

    def __init__(self, cfg, model):
        self.model, self.format = model, cfg.INPUT.FORMAT
        self.resize = build_test_augmentation(cfg)[0]

    def pool(self, file_name: str, boxes: np.ndarray) -> torch.Tensor:
        """[n, 4] XYXY original-image boxes -> [n, C, S, S] (the box pooler's output)."""
        model, heads = self.model, self.model.roi_heads
        image = read_image(file_name, format=self.format)
        tf = self.resize.get_transform(image)
        tensor = torch.as_tensor(np.ascontiguousarray(tf.apply_image(image).transpose(2, 0, 1)))
        features = model.backbone(model.preprocess_image([{"image": tensor}]).tensor)
        scaled = torch.as_tensor(tf.apply_box(boxes), dtype=torch.float32, device=model.device)
        return heads.box_pooler([features[f] for f in heads.box_in_features], [Boxes(scaled)])


def _gt_box_similarities(cfg, model, dataset_dicts, class_embeddings):
    """(head -> cosine similarities [N, C] of every ground-truth box, their classes [N])."""
    reader = RoIFeatureReader(cfg, model)
    heads = model.roi_heads
    emb = class_embeddings.to(model.device)
    text_head = "head" if heads.image_head is None else "text head"
    predicted = {text_head: []}
    if heads.image_head is not None:
        predicted["image head"] = []
    truth = []
    for d in dataset_dicts:
        boxes = _gt_boxes(d)
        if not len(boxes):
            continue
        pooled = reader.pool(d["file_name"], boxes)
        predicted[text_head].append(heads.box_predictor.embed(heads.box_head(pooled)) @ emb.t())
        if heads.image_head is not None:
            predicted["image head"].append(heads.image_head.embed(pooled) @ emb.t())
        truth.append(
            torch.tensor([a["category_id"] for a in d["annotations"] if not a.get("iscrowd", 0)])
        )
    return {head: torch.cat(s).cpu() for head, s in predicted.items()}, torch.cat(truth)


def _accuracies(sims: torch.Tensor, truth: torch.Tensor, groups) -> Dict[str, float]:
    """One head's top-1 (%) per group (see :func:`head_accuracy`)."""
    correct = (sims.argmax(1) == truth).float()
    out = {}
    for name, ids in {"all": None, **groups}.items():
        sel = (
            torch.ones_like(correct, dtype=torch.bool)
            if ids is None
            else torch.isin(truth, torch.as_tensor(list(ids)))
        )
        out[name] = float(100 * correct[sel].mean()) if sel.any() else float("nan")
    base = torch.as_tensor(list(groups.get("base", [])), dtype=torch.long)
    novel = torch.as_tensor(list(groups.get("novel", [])), dtype=torch.long)
    if len(base) and len(novel):
        on_base = torch.isin(truth, base)
        base_only = sims.index_fill(1, novel, float("-inf")).argmax(1) == truth
        out["base, base classes only"] = (
            float(100 * base_only[on_base].float().mean()) if on_base.any() else float("nan")
        )
        out["cosine to true class"] = float(100 * sims.gather(1, truth[:, None]).mean())
    return out


@torch.no_grad()
def clip_on_crops_detections(
    teacher,
    text_embeddings: torch.Tensor,
    proposals,
    dataset_dicts: Sequence[dict],
    *,
    num_proposals: int = 100,
    temperature: float = 0.01,
    scales: Sequence[float] = (1.0, 1.5),
    nms_thresh: float = 0.5,
    detections_per_image: int = 100,
    progress: bool = True,
) -> List[dict]:
    """
    Detections of the "CLIP on cropped regions" baseline for each image.

    For the first ``num_proposals`` proposals (best objectness first): the teacher's
    region embedding (:func:`encode_regions`: crops at ``scales``, summed, normalised),
    class probabilities p = softmax(cos(v, t_c) / tau) over the vocabulary, and the
    score sqrt(p_c * sigmoid(objectness)) (the proposal's objectness keeps background
    crops, which CLIP has no class for, from scoring high); then per-class NMS and the
    top ``detections_per_image``, as the detectors' inference does.

    Args:
        teacher: a CLIP model (``load_clip``).
        text_embeddings: [C, D] unit-norm text embeddings.
        proposals: an :class:`RPNProposals` (called with ``with_scores=True``).
        dataset_dicts: detectron2 dicts with ``file_name``, ``image_id``, height, width.

    Returns:
        per image a dict: image_id, boxes [n, 4] XYXY (original pixels), scores [n],
        classes [n] (contiguous ids).
    """
    text, out = text_embeddings.float(), []
    for d in tqdm(dataset_dicts, desc="CLIP on crops", unit="img", disable=not progress):
        image = read_image(d["file_name"], format="RGB")
        boxes, logits = proposals(d, image, with_scores=True)
        boxes = torch.as_tensor(boxes[:num_proposals], dtype=torch.float32)
        logits = torch.as_tensor(logits[:num_proposals], dtype=torch.float32)
        found = _crop_detections(
            teacher,
            text,
            image,
            boxes,
            logits,
            scales,
            temperature,
            nms_thresh,
            detections_per_image,
        )
        out.append({"image_id": d["image_id"], **found})
    return out


def lvis_results(
    detections: Sequence[dict], contiguous_to_dataset_id: Dict[int, int]
) -> List[dict]:
    """Per-image detections (as :func:`clip_on_crops_detections`) -> LVIS results (bbox, XYWH)."""
    results = []
    for det in detections:
        for box, score, cls in zip(det["boxes"], det["scores"], det["classes"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append(
                {
                    "image_id": det["image_id"],
                    "category_id": contiguous_to_dataset_id[int(cls)],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    return results


def _crop_detections(
    teacher, text, image, boxes, logits, scales, temperature, nms_thresh, per_image
) -> dict:
    """One image's CLIP-on-crops detections (see :func:`clip_on_crops_detections`)."""
    if not len(boxes):
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return dict(zip(("boxes", "scores", "classes"), empty))
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    emb = encode_regions(teacher, pixels, boxes, scales)
    probs = F.softmax(emb @ text.t() / temperature, dim=1)
    scores = (probs * torch.sigmoid(logits)[:, None]).sqrt()
    scores = torch.cat([scores, torch.zeros(len(scores), 1)], dim=1)  # no background
    inst, _ = fast_rcnn_inference_single_image(
        boxes, scores, image.shape[:2], 1e-4, nms_thresh, per_image
    )
    return {
        "boxes": inst.pred_boxes.tensor.numpy(),
        "scores": inst.scores.numpy(),
        "classes": inst.pred_classes.numpy(),
    }
