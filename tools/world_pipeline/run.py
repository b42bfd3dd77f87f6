"""The whole pipeline, one call: its stages, the analysis, the pictures, the report."""

import os
import time

from vild_d2.utils.atomic_io import atomic_write_json
from vild_d2.utils.folder_lock import FolderBusyError, lock_folder

from .analysis import analyse
from .artefacts import PipelineError
from .context import ROOT, PipelineRun
from .pictures import draw_pipeline_pictures
from .report import claim_lines, collect_results, provenance_line, results_table
from .stages import detector_configs, rpn_config, run_phases

__all__ = ["run_pipeline"]


def run_pipeline(run: PipelineRun) -> dict:
    """
    Run every stage that is not finished, then analyse, draw and report: writes
    OUTPUT/results.json and prints its tables. Returns the results.

    Raises PipelineError (one line) when OUTPUT is in use by another pipeline or a finished
    stage's output is unusable, StageFailed when a stage fails and PipelineStopped on
    SIGINT/SIGTERM (runner.py); only the command line exits.
    """
    try:
        lock = lock_folder(run.out, "tools/run_world_pipeline.py")
    except FolderBusyError as e:
        raise PipelineError(str(e)) from None
    with lock:  # held until the run ends
        return _run_locked(run)


def _run_locked(run: PipelineRun) -> dict:
    t0 = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    seconds = run_phases(run, env)
    model_cfgs = detector_configs(run)

    t_analysis = time.time()
    analysis = analyse(run, model_cfgs, rpn_config(run))
    seconds["analysis"] = time.time() - t_analysis
    draw_pipeline_pictures(run, model_cfgs)

    results = collect_results(run, analysis, seconds, time.time() - t0)
    atomic_write_json(run.path("results.json"), results)
    print(
        f"\n== results on shapes_world_val (seed {run.seed}), {results['total_seconds']:.0f}s in"
        " all\n"
    )
    print(provenance_line(results) + "\n")
    print(results_table(results))
    print("\nViLD's claims on this world (mask AP):")
    print(claim_lines(results))
    print(f"\n(results: {os.path.relpath(run.path('results.json'), ROOT)})")
    return results
