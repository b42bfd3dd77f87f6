#!/usr/bin/env python
"""
RoI-classification pretraining of a shapes-world detector: the world's stand-in for
ImageNet initialisation (the world has no pretrained backbone).

The detector of --config-file's backbone + FPN, box RoI pooler and box head, with a
linear classifier, learn on crops of newly rendered scenes (vild_d2/world/imagenet.py).
What the classifier learns, --labels:

- ``shapes`` (the demo's): scenes of every category, each object labelled by its *shape*
  (8 classes: the base and the concept shapes), never by its category. As ImageNet-1k
  holds many of LVIS's rare categories as classes of its own, the world's ImageNet knows
  every shape by sight; no ViLD model is ever given a novel category's label or name.
- ``base-categories``: scenes of the base categories only, labelled by category (no
  novel pixel is seen; the detectors' features then know only the base shapes).

Writes a checkpoint that train_net.py reads with MODEL.WEIGHTS (backbone and box head),
and its .json: the training curve and the top-1 on shapes_world_val's objects of the drawn
categories, classified by the detector's own path on whole val images with their
ground-truth boxes as RoIs.

    python tools/pretrain_world_detector.py --world datasets/shapes_world \\
        --config-file configs/shapes_world/base_R_18_FPN_tiny.yaml \\
        --output output/world_pretrain/model.pth [--images 3000 --steps 300] [KEY VALUE ...]
"""

import argparse
import os
import sys
import time

import torch

from vild_d2.config import ConfigError, load_config
from vild_d2.engine.precision import autocast_dtype
from vild_d2.utils.atomic_io import atomic_write, atomic_write_json
from vild_d2.world.imagenet import RoIClassifier, pretrain_roi_classifier, roi_top1_accuracy
from vild_d2.world.objects import teacher_objects, val_objects, world_annotations
from vild_d2.world.spec import category_names, category_shapes, novel_kinds, spec_from_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--world", required=True, help="the shapes world's root (annotations/, val/)")
    p.add_argument("--config-file", required=True, help="the detector's config")
    p.add_argument("--output", required=True, help="the checkpoint to write (.pth)")
    p.add_argument("--images", type=int, default=3000, help="scenes to render")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--crop-size", type=int, default=64, help="crop side, pixels")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--labels",
        choices=("base-categories", "shapes"),
        default="shapes",
        help="base-categories: scenes of base categories, labelled by category; shapes: "
        "scenes of every category, labelled by shape only (never by category)",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def label_space(spec, labels: str):
    """
    (categories drawn, class names, category -> class index [C] (-1: not a class)):
    "shapes": every category, labelled by its shape; "base-categories": the base ones.
    """
    names = category_names(spec)
    if labels == "shapes":
        drawn = list(range(len(names)))
        return drawn, [*spec.shapes, *spec.concept_shapes], torch.tensor(category_shapes(spec))
    novel = novel_kinds(spec)
    drawn = [c for c in range(len(names)) if c not in novel]
    to_class = torch.full((len(names),), -1, dtype=torch.long)
    to_class[drawn] = torch.arange(len(drawn))
    return drawn, [names[c] for c in drawn], to_class


def _write(args, model, classes, accuracy: float, history, seconds: float) -> None:
    """The checkpoint (backbone and box head) and its .json record, each atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    state = {"model": model.detector_state_dict()}
    atomic_write(args.output, lambda f: torch.save(state, f))
    record = {k: getattr(args, k) for k in ("config_file", "opts", "labels")}
    record["classes"] = classes
    record.update({k: getattr(args, k) for k in ("images", "steps", "batch_size", "crop_size")})
    record.update(lr=args.lr, seed=args.seed, val_top1=accuracy, history=history)
    record["seconds"] = seconds
    atomic_write_json(os.path.splitext(args.output)[0] + ".json", record)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    found = world_annotations(args.world, "pretrain_world_detector.py")
    if found is None:
        return 2
    train_json, val_json = found
    try:
        cfg = load_config(args.config_file, args.opts)
        dtype = autocast_dtype(cfg)  # SOLVER.AMP: bfloat16 on a CPU
    except ConfigError as e:
        print(f"pretrain_world_detector.py: error: {e}", file=sys.stderr)
        return 2
    spec = spec_from_json(train_json)
    drawn, classes, to_class = label_space(spec, args.labels)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    # stream 3: images that neither the dataset nor the teacher (stream 2) uses
    images, boxes, labels = teacher_objects(spec, args.images, args.seed, drawn, stream=3)
    labels = [to_class[lab] for lab in labels]
    what = "all" if args.labels == "shapes" else "base"
    print(
        f"rendered {args.images} scenes of {what} {len(drawn)} categories, "
        f"{sum(len(b) for b in boxes)} objects, labelled by {args.labels} "
        f"({len(classes)} classes; {time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    model = RoIClassifier(cfg, len(classes))
    options = dict(steps=args.steps, batch_size=args.batch_size, crop_size=args.crop_size)
    options.update(lr=args.lr, seed=args.seed, dtype=dtype)
    history = pretrain_roi_classifier(model, images, boxes, labels, **options)
    val_images, val_boxes, val_labels = val_objects(val_json, args.world)
    val_labels = [to_class[lab] for lab in val_labels]
    accuracy = roi_top1_accuracy(model, val_images, val_boxes, val_labels)  # drawn categories'
    _write(args, model, classes, accuracy, history, time.perf_counter() - t0)
    print(
        f"wrote {args.output}: top-1 on shapes_world_val's {what} objects (whole images, "
        f"ground-truth RoIs) {accuracy:.1f}%, {time.perf_counter() - t0:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
