#!/usr/bin/env python
"""
The main job: the whole ViLD pipeline on the embedded shapes world, on this machine.

    python tools/run_world_pipeline.py           # the full run (about an hour on 2 CPU cores)
    python tools/run_world_pipeline.py --seed 1  # another world (and training seed)
    python tools/run_world_pipeline.py --quick   # a few minutes: a smoke run

Stages, each a normal command you would also run on LVIS (printed as it starts; its
full output goes to OUTPUT/<stage>.log):
  1. data      datasets/prepare_shapes_world.py: world v4 (48 categories; 22 novel = rare,
               10 compositional + 12 new concepts)
  2. teacher   tools/train_world_teacher.py: the world's CLIP, which has seen every category
     pretrain  tools/pretrain_world_detector.py: the detector's backbone and box head learn
               to tell the 8 shapes apart on rendered scenes of every category (the world's
               ImageNet: it labels shapes, never categories)
  3. base      train_net.py, configs/shapes_world/base_R_18_FPN_tiny.yaml: Mask R-CNN on
               the base categories, from the pretraining; its weights initialise all four
               detectors (the role ImageNet weights play on LVIS) and its RPN proposes the
               distillation regions
     rpn       train_net.py --eval-only, configs/shapes_world/rpn_R_18_FPN_tiny.yaml with
               those weights: the RPN's recall of novel vs base val objects
  4. text      tools/precompute_text_embeddings.py: the 48 categories' embeddings
  5. regions   tools/precompute_region_embeddings.py: the RPN's top M proposals of every
               base-training image, embedded by the teacher
  6. models    tools/train_heads_on_cached_features.py: the base detector's pooled RoI
               features of every base-training image cached once, then the heads of
               ViLD-text and ViLD trained on them and ViLD-ensemble's image head beside
               ViLD-text's text head (24 epochs; rare = novel
               annotations removed; tau = 1 / the teacher's logit scale); train_net.py:
               the supervised Mask R-CNN (shapes_world_train, all categories, end to
               end); each evaluated with LVISEvaluator
  7. transfer  train_net.py --eval-only: the three ViLD models, no retraining, on val and on
               shapes_world_transfer (another vocabulary), each with its own embeddings
  8. analysis  APr per kind of novel category, the "CLIP on cropped regions" baseline, the
               heads' top-1 accuracy on val boxes, 90% bootstrap intervals, ViLD's claims,
               and the val classes detected as 8 shapes x 6 colours (systematic expansion)
  9. pictures  OUTPUT/detections_val.png: the models on the same val images;
               OUTPUT/expansion_val.png: ViLD-text and ViLD with the 48 names vs shapes x colours
Stages that do not depend on each other run side by side (--jobs, default 2 on a CPU):
the teacher lane (teacher, text) beside the detector lane (pretrain, base, rpn), the
caching beside the supervised detector, then the ViLD heads and the transfer evaluations
two at a time, each process with cores / 2 threads (on 2 cores a small detector trains
at ~1.4x the throughput; the conv-heavy teacher and pretraining gain little).
A stage whose result is complete is skipped, so a killed run resumes where it stopped
(delete OUTPUT to start over). Results: the tables printed at the end and
OUTPUT/results.json.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SEED = 0  # the world of datasets/shapes_world; other seeds get their own world


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
        "--output", default=None, help="output folder (default output/world[_quick][_seedN])"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=(
            "stages that do not depend on each other run this many at a time, each with "
            "cores / jobs threads (default: 2 on a CPU with 2 or more cores, else 1)"
        ),
    )
    return p.parse_args(argv)


def output_folders(args: argparse.Namespace):
    """OUTPUT, and the datasets root that holds the run's world (other worlds: in OUTPUT)."""
    name = "world" + ("_quick" if args.quick else "")
    name += f"_seed{args.seed}" if args.seed != DEFAULT_SEED else ""
    out = os.path.abspath(args.output or os.path.join(ROOT, "output", name))
    if args.quick or args.seed != DEFAULT_SEED:  # keep other worlds apart from the default one
        return out, os.path.join(out, "datasets")
    return out, os.path.abspath(os.getenv("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")))


def main(argv=None) -> None:
    args = parse_args(argv)
    out, datasets = output_folders(args)
    os.environ["DETECTRON2_DATASETS"] = datasets
    # vild_d2 registers its datasets on import: only now, under the root chosen above
    import torch

    from vild_d2.pipeline import (
        FULL,
        QUICK,
        PipelineError,
        PipelineRun,
        PipelineStopped,
        StageFailed,
        run_pipeline,
    )

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    jobs = args.jobs or (2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1)
    run = PipelineRun(
        size=QUICK if args.quick else FULL,
        seed=args.seed,
        device=device,
        jobs=jobs,
        quick=args.quick,
        out=out,
        data_root=os.path.join(datasets, "shapes_world"),
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
