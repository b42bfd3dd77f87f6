from .build import build_evaluator
from .ov_coco_evaluation import OpenVocabCOCOEvaluator, split_ap50
from .proposal_recall import ProposalRecallEvaluator, recall_limits

__all__ = ["build_evaluator", "OpenVocabCOCOEvaluator", "split_ap50", "ProposalRecallEvaluator", "recall_limits"]
