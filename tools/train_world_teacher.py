#!/usr/bin/env python
"""
The shapes world's CLIP teacher: a small CLIP (the ``clip`` package's model class)
trained contrastively on object crops <-> captions ("a photo of a red triangle.") of
every category, saved as a CLIP-format checkpoint that ``load_clip`` and the precompute
tools read exactly as they read OpenAI's. Like CLIP, the teacher has seen the whole world
(its own images, rendered with another seed, all categories uniform); the detector has
not. Reports its zero-shot accuracy on shapes_world_val's object crops (1.0x + 1.5x
region embeddings against the 63-template class embeddings: what ViLD distils).

    python tools/train_world_teacher.py --world datasets/shapes_world \\
        --output datasets/shapes_world/teacher/clip_world.pt [--images 1500 --steps 900]

Writes OUTPUT (state dict) and OUTPUT with .json (shape, accuracy, training curve).
"""

import argparse
import os
import sys
import time

import torch

from vild_d2.teacher import build_clip, load_clip, save_clip_checkpoint
from vild_d2.utils.atomic_io import atomic_write_json
from vild_d2.world.objects import teacher_objects, val_objects, world_annotations
from vild_d2.world.spec import category_names, novel_kinds, spec_from_json
from vild_d2.world.teacher_training import (
    WORLD_TEACHER_LR,
    WORLD_TEACHER_SHAPE,
    train_clip_on_crops,
    zero_shot_accuracy,
)

__all__ = ["main"]

# the arguments kept in the checkpoint's .json record
RECORDED_ARGUMENTS = (
    "images",
    "steps",
    "batch_size",
    "lr",
    "background_fraction",
    "seed",
    "bfloat16",
    "channels_last",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--world", required=True, help="the shapes world's root (annotations/, train/, val/)"
    )
    p.add_argument("--output", required=True, help="the checkpoint to write (.pt)")
    p.add_argument("--images", type=int, default=1500, help="teacher images to render")
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--lr", type=float, default=WORLD_TEACHER_LR, help="AdamW's peak learning rate")
    p.add_argument(
        "--background-fraction",
        type=float,
        default=0.25,
        help="share of each batch that are crops of no object, captioned 'background'",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--bfloat16",
        action="store_true",
        help="the forward pass under bfloat16 autocast (float32 weights; as SOLVER.AMP does)",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="train the image tower in NHWC memory (faster convolutions on a CPU)",
    )
    return p


def _zero_shot_on_val(checkpoint: str, val_json: str, world: str, names, kinds) -> dict:
    """The saved teacher, read by the loader every user goes through, on val's boxes."""
    loaded, _ = load_clip(checkpoint)
    groups = {kind: [i for i, k in kinds.items() if k == kind] for kind in set(kinds.values())}
    val = val_objects(val_json, world)
    return zero_shot_accuracy(loaded, *val, names, novel_ids=sorted(kinds), groups=groups)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    found = world_annotations(args.world, "train_world_teacher.py")
    if found is None:
        return 2
    train_json, val_json = found
    spec = spec_from_json(train_json)
    names = category_names(spec)
    kinds = novel_kinds(spec)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    train = teacher_objects(spec, args.images, args.seed)
    print(
        f"rendered {args.images} teacher images, {sum(len(b) for b in train[1])} objects "
        f"({time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    model = build_clip(seed=args.seed, **WORLD_TEACHER_SHAPE)
    history = train_clip_on_crops(
        model,
        *train,
        names,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        background_fraction=args.background_fraction,
        seed=args.seed,
        dtype=torch.bfloat16 if args.bfloat16 else None,
        channels_last=args.channels_last,
    )
    save_clip_checkpoint(model, args.output)
    acc = _zero_shot_on_val(args.output, val_json, args.world, names, kinds)
    atomic_write_json(
        os.path.splitext(args.output)[0] + ".json",
        {
            "shape": {
                k: list(v) if isinstance(v, tuple) else v for k, v in WORLD_TEACHER_SHAPE.items()
            },
            **{k: getattr(args, k) for k in RECORDED_ARGUMENTS},
            "zero_shot_val": acc,
            "history": history,
            "seconds": time.perf_counter() - t0,
        },
    )
    print(
        f"wrote {args.output}: zero-shot accuracy on shapes_world_val objects"
        f" {acc['accuracy']:.1f}% (novel {acc['accuracy_novel']:.1f}%, base"
        f" {acc['accuracy_base']:.1f}%; {acc['boxes']} boxes), {time.perf_counter() - t0:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
