"""
One run of the pipeline: its choices (size, seed, device, lanes) and where its artefacts
live. Every other module of the pipeline takes a :class:`PipelineRun`.
"""

import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

from .sizes import TRAIN_DATASET, PipelineSize

__all__ = ["ROOT", "PipelineRun"]

# The checkout the pipeline is part of: the stages run its scripts (train_net.py, tools/,
# datasets/) with its configs; vild_d2 is whatever the interpreter imports.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class PipelineRun:
    """One run's choices and where its artefacts live (``out``: OUTPUT)."""

    size: PipelineSize
    seed: int
    device: str
    jobs: int  # lanes run side by side
    quick: bool
    out: str  # absolute
    data_root: str  # the world's folder (datasets/shapes_world, or one under OUTPUT)
    precision: str = "bfloat16"  # the trainings' autocast dtype (SOLVER.AMP), or "float32"
    python: str = field(default_factory=lambda: sys.executable)  # runs every stage
    tau_options: Optional[List[str]] = field(default=None, repr=False)  # set on first use

    @property
    def training_seed(self) -> int:  # the detectors' SEED
        return 42 + self.seed

    def teacher_file(self, name: str = "clip_world.pt") -> str:
        return os.path.join(self.data_root, "teacher", name)

    @property
    def teacher(self) -> str:
        return self.teacher_file()

    @property
    def text(self) -> str:  # the 48 categories' embeddings (train and val share them)
        return self.teacher_file("clip_world_text.npy")

    @property
    def transfer_text(self) -> str:
        return self.teacher_file("clip_world_transfer_text.npy")

    @property
    def pretrained(self) -> str:
        return os.path.join(self.out, "pretrain", "roi_classifier.pth")

    @property
    def base_weights(self) -> str:
        return os.path.join(self.out, "base", "model_final.pth")

    @property
    def roi_features(self) -> str:  # the base detector's cached RoI features
        return os.path.join(self.out, "roi_features", "roi_features.pth")

    @property
    def store(self) -> str:
        return os.path.join(self.out, "region_embeddings", TRAIN_DATASET)

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def script(self, *parts: str) -> List[str]:
        return [self.python, os.path.join(ROOT, *parts)]
