from .trainer import EVAL_RESULTS_FILE, Trainer, setup

__all__ = ["EVAL_RESULTS_FILE", "Trainer", "setup"]
