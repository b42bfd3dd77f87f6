#!/usr/bin/env python
"""
The main job: the whole ViLD pipeline on the embedded shapes world, on this machine.

    python tools/run_world_pipeline.py           # the full run (23-38 min on 2 CPU cores)
    python tools/run_world_pipeline.py --seed 7  # another world (and training seed)
    python tools/run_world_pipeline.py --quick   # a few minutes: a smoke run
    python tools/run_world_pipeline.py --val-images 100  # the claims on 100 val images

Each stage is a command of this checkout you would also run on LVIS (printed as it starts;
its whole output in OUTPUT/<stage>.log); stages that do not depend on each other run side
by side (--jobs). A stage whose result is complete is skipped, so a killed run resumes
where it stopped (delete OUTPUT to start over). Results: the tables printed at the end and
OUTPUT/results.json. The stages, what each writes, and the claims checked:
docs/world_pipeline.md; the code: tools/world_pipeline/.
"""

import argparse
import dataclasses
import os
import sys

from world_pipeline.context import ROOT, PipelineRun
from world_pipeline.omp_wait import wait_briefly
from world_pipeline.sizes import DEFAULT_SEED, FULL, QUICK


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny world and a few iterations (a smoke run)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=(
            "the world's seed, also the teacher's and the detectors' training seed "
            f"(default {DEFAULT_SEED}; other seeds keep their world in OUTPUT/datasets)"
        ),
    )
    p.add_argument(
        "--output",
        default=None,
        help="output folder (default output/world[_quick][_seedN][_float32][_valN])",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--precision",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help=(
            "the trainings' number format: bfloat16 autocast with float32 weights (SOLVER.AMP;"
            " 0.54-0.68x the step time of float32 on a CPU with AVX-512 BF16), or float32"
        ),
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=(
            "stages that do not depend on each other run this many at a time, each with "
            "cores / jobs threads (default: 2 on a CPU with 2 or more cores, else 1)"
        ),
    )
    p.add_argument(
        "--val-images",
        type=int,
        default=None,
        help=(
            f"val images the detectors are evaluated and the claims checked on (default "
            f"{FULL.num_val}, --quick {QUICK.num_val}); more narrow the claims' intervals, at "
            "about 0.25 s per image and model on one CPU core. Training does not change"
        ),
    )
    args = p.parse_args(argv)
    if args.val_images is not None and args.val_images < 1:
        p.error(f"--val-images must be at least 1, got {args.val_images}")
    return args


def _default_size(args: argparse.Namespace):
    return QUICK if args.quick else FULL


def pipeline_size(args: argparse.Namespace):
    """The run's PipelineSize: the full or the quick one, with --val-images if it differs."""
    size = _default_size(args)
    if args.val_images in (None, size.num_val):
        return size
    return dataclasses.replace(size, num_val=args.val_images)


def output_folders(args: argparse.Namespace):
    """OUTPUT, and the datasets root that holds the run's world (other worlds: in OUTPUT)."""
    name = "world" + ("_quick" if args.quick else "")
    name += f"_seed{args.seed}" if args.seed != DEFAULT_SEED else ""
    name += "_float32" if args.precision == "float32" else ""
    other_val = pipeline_size(args) is not _default_size(args)
    name += f"_val{args.val_images}" if other_val else ""
    out = os.path.abspath(args.output or os.path.join(ROOT, "output", name))
    # other worlds (another seed or val set), and float32's teacher (it lives in its world's
    # folder), apart from the default
    if args.quick or args.seed != DEFAULT_SEED or args.precision == "float32" or other_val:
        return out, os.path.join(out, "datasets")
    return out, os.path.abspath(os.getenv("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")))


def main(argv=None) -> None:
    args = parse_args(argv)
    out, datasets = output_folders(args)
    os.environ["DETECTRON2_DATASETS"] = datasets
    wait_briefly()  # before torch starts OpenMP here; every stage inherits it (omp_wait.py)
    # vild_d2 registers its datasets on import: only now, under the root chosen above
    import torch

    from world_pipeline.artefacts import PipelineError
    from world_pipeline.run import run_pipeline
    from world_pipeline.runner import PipelineStopped, StageFailed

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    jobs = args.jobs or (2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1)
    run = PipelineRun(
        size=pipeline_size(args),
        seed=args.seed,
        device=device,
        jobs=jobs,
        quick=args.quick,
        out=out,
        data_root=os.path.join(datasets, "shapes_world"),
        precision=args.precision,
    )
    try:
        run_pipeline(run)
    except PipelineStopped as e:  # every stage was stopped; the same command resumes
        print(f"\n== {e}", flush=True)
        sys.exit(128 + e.signum)
    except StageFailed as e:  # its message ends with the end of the stage's log
        sys.exit(str(e))
    except PipelineError as e:
        sys.exit(f"run_world_pipeline.py: error: {e}")


if __name__ == "__main__":
    main()
