#!/usr/bin/env python
"""
Train a ViLD model's box heads on the cached RoI features of a frozen detector, then
evaluate it like ``train_net.py --eval-only``:

    python tools/train_heads_on_cached_features.py \\
        --config-file configs/shapes_world/vild_R_18_FPN_tiny.yaml --epochs 8 \\
        [--cache FILE] [--images-per-batch 8] [--text-head FILE] \\
        MODEL.WEIGHTS output/world/base/model_final.pth OUTPUT_DIR output/vild_heads [KEY VALUE ...]

MODEL.WEIGHTS is the frozen detector (backbone, RPN and mask head are kept as they are);
its pooled RoI features of every training image (the sampled proposals and, with
DATASETS.REGION_STORE_TRAIN, the first M distillation regions) are cached in ``--cache``
(default OUTPUT_DIR/roi_features.pth; reused when computed from the same weights,
datasets and sampling, so ViLD, ViLD-text and ViLD-ensemble can share one), and the box
head, box predictor and (ViLD-ensemble) image head train ``--epochs`` passes over them
with the model's own losses: SGD at SOLVER.BASE_LR with SOLVER.MOMENTUM and
SOLVER.WEIGHT_DECAY, 5% warm-up, cosine decay, seed SEED.
With --text-head FILE (ViLD-ensemble) the text head is a trained ViLD-text's on the same
frozen detector (FILE: its model_final.pth), kept as it is, and only the image head trains,
on the distillation regions: with the detector frozen the ensemble's text head would train
exactly as ViLD-text's did.
With --cache-only it stops once the cache is written. Otherwise it writes
OUTPUT_DIR/model_final.pth, OUTPUT_DIR/head_training.json (each epoch's losses)
and, after evaluating on DATASETS.TEST, OUTPUT_DIR/eval_results.json.
"""

import argparse
import logging
import os
import sys

import vild_d2  # noqa: F401  (first: registers datasets and components, imports detectron2 quietly)

# isort: split
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.evaluation.testing import flatten_results_dict

from vild_d2.config import ConfigError
from vild_d2.engine import Trainer, setup
from vild_d2.engine.cached_roi_features import (
    CacheSource,
    build_roi_feature_cache,
    load_roi_feature_cache,
)
from vild_d2.engine.head_training import load_text_head, train_heads_on_cache
from vild_d2.engine.precision import autocast_dtype
from vild_d2.engine.trainer import build_config
from vild_d2.modeling import ViLDRCNN
from vild_d2.utils.atomic_io import atomic_write, atomic_write_json
from vild_d2.utils.folder_lock import FolderBusyError, lock_folder

logger = logging.getLogger("vild_d2.train_heads")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument(
        "--epochs",
        type=int,
        help="passes over the cached features (required but with --cache-only)",
    )
    p.add_argument("--images-per-batch", type=int, default=8, help="images per step (default 8)")
    p.add_argument(
        "--cache", default=None, help="the RoI feature cache (default OUTPUT_DIR/roi_features.pth)"
    )
    p.add_argument(
        "--cache-only", action="store_true", help="write the cache and stop (no training)"
    )
    p.add_argument(
        "--text-head",
        metavar="FILE",
        help="ViLD-ensemble: take the text head from this ViLD-text checkpoint, train the image "
        "head only",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    args = p.parse_args(argv)
    if args.epochs is None and not args.cache_only:
        p.error("--epochs is required (or --cache-only)")
    if (args.epochs is not None and args.epochs < 1) or args.images_per_batch < 1:
        p.error("--epochs and --images-per-batch must be at least 1")
    # what detectron2's default_setup reads
    args.eval_only, args.resume, args.num_gpus, args.num_machines = False, False, 1, 1
    return args


def cached_features(cfg, model, path: str):
    """The cache at ``path`` if it serves ``cfg``, else built now and written there."""
    cache = load_roi_feature_cache(path, CacheSource.of(cfg))
    if cache is not None:
        logger.info(f"RoI features: {path} ({cache.num_images} images), reused")
        return cache
    cache = build_roi_feature_cache(cfg, model)
    cache.save(path)
    logger.info(f"RoI features of {cache.num_images} images cached in {path}")
    return cache


def main(args) -> dict:
    cfg = setup(args)
    model = Trainer.build_model(cfg)
    if not isinstance(model, ViLDRCNN):
        raise ConfigError(
            f"{args.config_file}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE}; head "
            "training on cached features trains ViLD heads (ViLDRCNN)"
        )
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if args.text_head:
        try:
            load_text_head(model, args.text_head)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--text-head: {e}") from e
    cache = cached_features(
        cfg, model, args.cache or os.path.join(cfg.OUTPUT_DIR, "roi_features.pth")
    )
    if args.cache_only:
        return {}
    history = train_heads_on_cache(
        model,
        cache,
        epochs=args.epochs,
        images_per_batch=args.images_per_batch,
        base_lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        seed=cfg.SEED,
        text_head=not args.text_head,
        dtype=autocast_dtype(cfg),  # SOLVER.AMP: bfloat16 on a CPU
    )
    atomic_write_json(os.path.join(cfg.OUTPUT_DIR, "head_training.json"), history)
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    atomic_write(weights, lambda f: torch.save({"model": model.state_dict()}, f))
    logger.info(f"wrote {weights}")
    results = flatten_results_dict(Trainer.test(cfg, model))
    atomic_write_json(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), results)
    return results


def invoke_main(argv=None) -> None:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
        lock = lock_folder(cfg.OUTPUT_DIR, "tools/train_heads_on_cached_features.py")
    except (ConfigError, FolderBusyError) as e:
        print(f"train_heads_on_cached_features.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    with lock:
        try:
            main(args)
        except ConfigError as e:
            print(f"train_heads_on_cached_features.py: error: {e}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    invoke_main()
