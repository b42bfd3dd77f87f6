"""
The main job (``make demo``, tools/run_world_pipeline.py): ViLD's whole pipeline on the
embedded shapes world, stage by stage, each stage a command you would also run on LVIS.

    sizes      how big each stage is (the full run, --quick); the four compared detectors
    stages     the stages, declared: command, what "done" means; the phases they run in
    runner     runs stages (commands) one after another or side by side, signals forwarded
    artefacts  readers of what the stages leave (metrics.json, eval_results.json, records)
    analysis   AP per kind of novel category, CLIP on crops, the heads' accuracy, intervals
    claims     ViLD's claims, checked on those numbers
    report     OUTPUT/results.json and the printed tables
    pictures   OUTPUT/detections_val.png, OUTPUT/expansion_val.png
    run        all of it, one call: run_pipeline

Import it only once DETECTRON2_DATASETS names the world's root: importing vild_d2
registers its datasets under that root.
"""

from .artefacts import PipelineError
from .run import run_pipeline
from .runner import PipelineStopped, StageFailed
from .sizes import FULL, QUICK, PipelineSize
from .stages import PipelineRun

__all__ = [
    "PipelineError",
    "PipelineStopped",
    "StageFailed",
    "PipelineRun",
    "PipelineSize",
    "FULL",
    "QUICK",
    "run_pipeline",
]
