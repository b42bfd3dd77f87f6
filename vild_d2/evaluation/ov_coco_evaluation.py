"""COCO evaluation of an open-vocabulary split: AP50 over novel, base and all categories."""

from typing import Dict, Sequence

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from tabulate import tabulate

__all__ = ["OpenVocabCOCOEvaluator", "split_ap50"]


def split_ap50(precision: np.ndarray, novel_ids: Sequence[int]) -> Dict[str, float]:
    """
    Args:
        precision: pycocotools' ``eval["precision"]``, [T, R, K, A, M] (IoU thresholds,
            recall points, categories, area ranges, max-dets), -1 where undefined.
        novel_ids: indices into K of the novel categories.

    Returns:
        {"AP50-novel", "AP50-base", "AP50-all"} in percent: the mean over categories
        with ground truth of the per-category AP at IoU 0.5, all areas, 100 detections.
    """
    ap = precision[0, :, :, 0, -1]  # IoU 0.5, area all, maxDets 100 -> [R, K]
    per_class = np.array([np.mean(col[col > -1]) if (col > -1).any() else np.nan for col in ap.T])
    novel = np.zeros(len(per_class), dtype=bool)
    novel[list(novel_ids)] = True

    def mean(mask):
        values = per_class[mask & ~np.isnan(per_class)]
        return float(values.mean() * 100) if len(values) else float("nan")

    return {"AP50-novel": mean(novel), "AP50-base": mean(~novel), "AP50-all": mean(novel | ~novel)}


class OpenVocabCOCOEvaluator(COCOEvaluator):
    """
    COCOEvaluator (pure-Python COCO API) whose bbox/segm results also hold AP50-novel,
    AP50-base and AP50-all, with the novel categories from the dataset's
    ``novel_class_ids`` metadata.
    """

    def __init__(self, dataset_name: str, *args, **kwargs):
        kwargs.setdefault("use_fast_impl", False)
        super().__init__(dataset_name, *args, **kwargs)
        self._novel_ids = list(MetadataCatalog.get(dataset_name).novel_class_ids)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None or not results:
            return results
        split = split_ap50(coco_eval.eval["precision"], self._novel_ids)
        results.update(split)
        self._logger.info(
            f"Open-vocabulary {iou_type} AP50:\n"
            + tabulate([list(split.values())], headers=list(split), floatfmt=".3f")
        )
        return results
