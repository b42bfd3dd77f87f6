from .build import build_evaluator
from .ov_coco_evaluation import OpenVocabCOCOEvaluator, split_ap50

__all__ = ["build_evaluator", "OpenVocabCOCOEvaluator", "split_ap50"]
