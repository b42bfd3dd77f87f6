from .build import build_evaluator
from .lvis_ap import LVISAPTable, bootstrap_differences
from .ov_coco_evaluation import OpenVocabCOCOEvaluator, split_ap50
from .proposal_recall import ProposalRecallEvaluator, recall_limits
from .region_classification import clip_on_crops_detections, head_accuracy

__all__ = [
    "build_evaluator",
    "OpenVocabCOCOEvaluator",
    "split_ap50",
    "ProposalRecallEvaluator",
    "recall_limits",
    "LVISAPTable",
    "bootstrap_differences",
    "clip_on_crops_detections",
    "head_accuracy",
]
