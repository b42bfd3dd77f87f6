"""Choose the evaluator of a dataset from its metadata."""

import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, LVISEvaluator

from ..compat.numpy_aliases import ensure_numpy_aliases
from ..data.datasets.lvis_format import ensure_lvis_metadata
from .ground_truth_cache import coco_ground_truth_json
from .ov_coco_evaluation import OpenVocabCOCOEvaluator
from .proposal_recall import ProposalRecallEvaluator, recall_limits


def build_evaluator(cfg, dataset_name: str, output_dir: str = None):
    """
    ProposalRecallEvaluator (recall@K of all / novel / base objects) for a proposal
    network (``MODEL.META_ARCHITECTURE == "ProposalNetwork"``); otherwise
    LVISEvaluator (AP, APr, APc, APf; at most ``cfg.TEST.DETECTIONS_PER_IMAGE`` detections
    per image) for datasets whose metadata says ``evaluator_type == "lvis"``;
    OpenVocabCOCOEvaluator (COCO AP + AP50 on novel/base/all) for ``"coco_ov"``;
    COCOEvaluator with the pure-Python COCO API otherwise (detectron2's fast C++ one is
    not built here).
    """
    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    if cfg.MODEL.META_ARCHITECTURE == "ProposalNetwork":
        return ProposalRecallEvaluator(
            dataset_name, recall_limits(cfg.MODEL.RPN.POST_NMS_TOPK_TEST)
        )
    meta = MetadataCatalog.get(dataset_name)
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    kind = getattr(meta, "evaluator_type", None)
    if kind == "lvis":
        ensure_numpy_aliases()  # lvis==0.5.3 uses np.float
        ensure_lvis_metadata(dataset_name)
        return LVISEvaluator(
            dataset_name,
            tasks=tasks,
            output_dir=output_dir,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
    if kind in ("coco_ov", "coco"):  # ground truth keyed by content, never a stale cache
        coco_ground_truth_json(dataset_name, output_dir)
    if kind == "coco_ov":
        return OpenVocabCOCOEvaluator(dataset_name, tasks=tasks, output_dir=output_dir)
    if kind == "coco" or hasattr(meta, "json_file"):
        return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_dir, use_fast_impl=False)
    raise ValueError(
        f"dataset '{dataset_name}' has no evaluator: its metadata has neither "
        "evaluator_type 'lvis'/'coco'/'coco_ov' nor a json_file"
    )
