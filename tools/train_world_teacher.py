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

import numpy as np
import torch

__all__ = ["WORLD_TEACHER_SHAPE", "main"]

# A CLIP with a small ModifiedResNet image tower (learns from scratch far faster than a
# ViT on a CPU) and a 2-layer text transformer with a 24-token context.
WORLD_TEACHER_SHAPE = dict(
    embed_dim=64,
    image_resolution=32,
    vision_layers=(1, 1, 1, 1),
    vision_width=48,
    vision_patch_size=None,
    context_length=24,
    transformer_width=128,
    transformer_heads=2,
    transformer_layers=2,
)


def _xyxy(xywh_boxes) -> torch.Tensor:
    from detectron2.structures import BoxMode

    return torch.tensor(
        [BoxMode.convert(b, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for b in xywh_boxes],
        dtype=torch.float32,
    ).reshape(-1, 4)


def teacher_objects(spec, num_images: int, seed: int, categories=None, stream: int = 2):
    """
    The teacher's own images (the world's renderer, all categories uniform, a random
    stream the dataset never uses), as image tensors [3, H, W] uint8, boxes [n, 4] XYXY
    and category indices [n]. ``categories``: draw only these (uniform), e.g. the base ones;
    ``stream``: another value gives other images.
    """
    from vild_d2.data.datasets.shapes_world import render_scene, scene_categories

    rng = np.random.default_rng([spec.seed, stream, seed])
    if categories is None:
        plan = scene_categories(rng, spec, num_images, long_tailed=False)
    else:
        low, high = spec.objects_per_image
        plan = [
            rng.choice(list(categories), size=int(rng.integers(low, high + 1))).tolist()
            for _ in range(num_images)
        ]
    images, boxes, labels = [], [], []
    for cats in plan:
        img, objects = render_scene(rng, spec, cats)
        images.append(torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy()))
        boxes.append(_xyxy([o["bbox"] for o in objects]))
        labels.append(torch.tensor([o["category"] for o in objects], dtype=torch.long))
    return images, boxes, labels


def val_objects(json_file: str, image_root: str):
    """shapes_world_val's images and ground-truth boxes / category indices, as tensors."""
    from detectron2.data import detection_utils as utils

    from vild_d2.data.datasets import load_lvis_format_json

    images, boxes, labels = [], [], []
    for d in load_lvis_format_json(json_file, image_root):
        images.append(
            torch.from_numpy(
                np.ascontiguousarray(utils.read_image(d["file_name"], "RGB").transpose(2, 0, 1))
            )
        )
        boxes.append(_xyxy([a["bbox"] for a in d["annotations"]]))  # the loader keeps XYWH_ABS
        labels.append(torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.long))
    return images, boxes, labels


def world_annotations(world: str, tool: str):
    """
    (train.json, val.json) of the shapes world under ``world``; None, after a one-line
    error on stderr that names the missing file, when the world is not there.
    """
    paths = tuple(os.path.join(world, "annotations", f"{s}.json") for s in ("train", "val"))
    for path in paths:
        if not os.path.isfile(path):
            print(
                f"{tool}: error: {path} not found (generate the world first: "
                "datasets/prepare_shapes_world.py)",
                file=sys.stderr,
            )
            return None
    return paths


def main(argv=None) -> int:
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
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument(
        "--background-fraction",
        type=float,
        default=0.25,
        help="share of each batch that are crops of no object, captioned 'background'",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from vild_d2.data.datasets.shapes_world import category_names, novel_kinds, spec_from_json
    from vild_d2.teacher import build_clip, load_clip, save_clip_checkpoint
    from vild_d2.teacher.train_contrastive import train_clip_on_crops, zero_shot_accuracy
    from vild_d2.utils.atomic_io import atomic_write_json

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
    )
    save_clip_checkpoint(model, args.output)
    loaded, _ = load_clip(args.output)  # measured through the loader every user goes through
    acc = zero_shot_accuracy(
        loaded,
        *val_objects(val_json, args.world),
        names,
        novel_ids=sorted(kinds),
        groups={kind: [i for i, k in kinds.items() if k == kind] for kind in set(kinds.values())},
    )
    atomic_write_json(
        os.path.splitext(args.output)[0] + ".json",
        {
            "shape": {
                k: list(v) if isinstance(v, tuple) else v for k, v in WORLD_TEACHER_SHAPE.items()
            },
            "images": args.images,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "background_fraction": args.background_fraction,
            "seed": args.seed,
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
