#!/usr/bin/env python
"""
Train and evaluate vild_d2 models, with detectron2's usual flags:

    python train_net.py --config-file configs/... [--eval-only] [--resume] \
        [--num-gpus N --num-machines M --machine-rank R --dist-url URL] [KEY VALUE ...]

On a machine without a GPU, add ``MODEL.DEVICE cpu``; ``--num-gpus N`` then starts N CPU
processes joined by gloo (SOLVER.IMS_PER_BATCH is the total over them, as on GPUs).
``--eval-only`` also writes the metrics to OUTPUT_DIR/eval_results.json. A worker that
dies ends the run with an error naming it (the others are stopped).
"""

import os
import sys

import vild_d2  # noqa: F401  (first: registers datasets and components, imports detectron2 quietly)

# isort: split
import detectron2.utils.comm as comm
import torch.multiprocessing as mp
from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.evaluation.testing import flatten_results_dict

from vild_d2.checkpoint.strict import StrictCheckpointer
from vild_d2.engine import EVAL_RESULTS_FILE, Trainer, setup
from vild_d2.engine.launch import launch
from vild_d2.engine.trainer import build_config
from vild_d2.errors import VildD2Error
from vild_d2.utils.atomic_io import atomic_write_json
from vild_d2.utils.folder_lock import lock_folder


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        # strict: evaluating random parameters the checkpoint did not set is an error
        StrictCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
            # training logs its evaluations to metrics.json; an evaluation alone goes here
            atomic_write_json(
                os.path.join(cfg.OUTPUT_DIR, EVAL_RESULTS_FILE), flatten_results_dict(res)
            )
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    try:
        cfg = build_config(args)  # fail here, in one line, before any worker is launched
        # one job per output folder: a second trainer (e.g. a re-run racing a killed run's
        # survivor) would mix checkpoints and metrics; held until this process ends
        lock = (
            lock_folder(cfg.OUTPUT_DIR, "train_net.py" + (" --eval-only" if args.eval_only else ""))
            if args.machine_rank == 0
            else None
        )
    except VildD2Error as e:  # a config, file or folder at fault: one line, no traceback
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print("Command Line Args:", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            device=cfg.MODEL.DEVICE,
        )
    except VildD2Error as e:  # the data or weights, found at set-up
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except mp.ProcessExitedException as e:  # a worker killed or crashed: the others were stopped
        print(
            f"train_net.py: error: worker {e.error_index} of"
            f" {args.num_gpus * args.num_machines} died ({e}); the run is stopped. With --resume it"
            " continues from the last checkpoint.",
            file=sys.stderr,
        )
        sys.exit(1)
    finally:
        if lock is not None:
            lock.close()


if __name__ == "__main__":
    invoke_main()
