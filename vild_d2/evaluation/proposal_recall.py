"""
Class-agnostic recall of a proposal network, split into novel and base ground truth.

ViLD's distillation can only teach the detector about novel objects that its proposals
cover, so the recall of the base-trained RPN on *novel* objects bounds what distillation
can do. detectron2's own proposal evaluation reports one recall over all objects; this
one reports it for all / novel / base objects of an open-vocabulary dataset.
"""

import itertools
from typing import Dict, List, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from detectron2.utils import comm

from ..vocabulary.core import dataset_vocabulary

__all__ = ["ProposalRecallEvaluator", "recall_limits"]

# IoU thresholds of average recall (AR), as in COCO: 0.50, 0.55, ..., 0.95.
AR_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def recall_limits(post_nms_topk: int) -> List[int]:
    """The proposal counts K to report recall@K at: 100, 300, 1000 up to the RPN's output size."""
    return sorted({k for k in (100, 300, 1000) if k < post_nms_topk} | {post_nms_topk})


class ProposalRecallEvaluator(DatasetEvaluator):
    """
    For every ground-truth object (crowd regions excluded), the best IoU of the first K
    proposals (highest objectness first) of its image. Reports, in %, for each K in
    ``limits`` and for all / novel / base objects:

    - ``R50@K``: fraction of objects with a proposal of IoU >= 0.5 among the first K;
    - ``AR@K``: that fraction averaged over IoU thresholds 0.50:0.05:0.95.

    Keys: ``AR@K``, ``AR_novel@K``, ``AR_base@K``, ``R50@K``, ``R50_novel@K``,
    ``R50_base@K`` (the novel/base ones only if the dataset has novel categories), and
    ``AR_<kind>@K`` / ``R50_<kind>@K`` for each kind of novel category if the dataset's
    metadata has ``class_novel_kind`` (the shapes world: compositional, concept), under
    the task ``"proposals"``. Expects the outputs of a ProposalNetwork (``"proposals"``
    Instances with ``proposal_boxes`` and ``objectness_logits``, in input-image pixels).
    Best IoU per object, not a one-to-one matching: one proposal may cover two objects.
    """

    def __init__(
        self, dataset_name: str, limits: Sequence[int] = (100, 300, 1000), distributed: bool = True
    ):
        self._dataset_name = dataset_name
        self._limits = [int(k) for k in limits]
        self._distributed = distributed
        vocab = dataset_vocabulary(dataset_name)
        self._base_mask = vocab.base_mask.numpy() if vocab else None
        self._kinds = np.array(
            getattr(MetadataCatalog.get(dataset_name), "class_novel_kind", []), dtype=object
        )
        # image_id -> (gt boxes [G, 4] XYXY, category ids [G])
        self._gt: Dict[object, tuple] = {}
        for d in DatasetCatalog.get(dataset_name):
            anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
            boxes = [
                BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns
            ]
            self._gt[d["image_id"]] = (
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                np.array([a["category_id"] for a in anns], dtype=np.int64),
            )
        self.reset()

    def reset(self) -> None:
        self._best_iou: List[np.ndarray] = []  # per image: [G, len(limits)]
        self._categories: List[np.ndarray] = []  # per image: [G]

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            if image_id not in self._gt:
                raise KeyError(
                    f"{self._dataset_name}: image id {image_id} has no ground truth entry"
                )
            gt_boxes, categories = self._gt[image_id]
            proposals = out["proposals"].to("cpu")
            order = torch.argsort(proposals.objectness_logits, descending=True)
            boxes = proposals.proposal_boxes.tensor[order]
            best = np.zeros((len(gt_boxes), len(self._limits)), dtype=np.float32)
            if len(gt_boxes) and len(boxes):
                iou = pairwise_iou(Boxes(gt_boxes), Boxes(boxes))  # [G, P]
                for j, k in enumerate(self._limits):
                    best[:, j] = iou[:, :k].max(dim=1).values.numpy()
            self._best_iou.append(best)
            self._categories.append(categories)

    def evaluate(self):
        best_iou, categories = self._best_iou, self._categories
        if self._distributed:
            comm.synchronize()
            best_iou = list(itertools.chain(*comm.gather(best_iou, dst=0)))
            categories = list(itertools.chain(*comm.gather(categories, dst=0)))
            if not comm.is_main_process():
                return {}
        best = np.concatenate(best_iou) if best_iou else np.zeros((0, len(self._limits)))
        cats = np.concatenate(categories) if categories else np.zeros(0, dtype=np.int64)
        groups = {"": np.ones(len(cats), dtype=bool)}
        if self._base_mask is not None and not self._base_mask.all():
            is_base = self._base_mask[cats]
            groups.update({"_novel": ~is_base, "_base": is_base})
        if len(self._kinds):
            for kind in sorted({k for k in self._kinds if k}):
                groups[f"_{kind}"] = self._kinds[cats] == kind
        results = {}
        for suffix, sel in groups.items():
            for j, k in enumerate(self._limits):
                b = best[sel, j]
                if len(b) == 0:
                    r50 = ar = float("nan")
                else:
                    r50 = 100.0 * float((b >= 0.5).mean())
                    ar = 100.0 * float(np.mean([(b >= t).mean() for t in AR_IOU_THRESHOLDS]))
                results[f"AR{suffix}@{k}"] = ar
                results[f"R50{suffix}@{k}"] = r50
        return {"proposals": results}
