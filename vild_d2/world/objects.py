"""
The world's objects as tensors, for the teacher's and the pretraining's own training
loops: newly rendered scenes (a random stream the dataset never uses) and val's
ground truth.
"""

import os
import sys

import numpy as np
import torch
from detectron2.structures import BoxMode

from ..data.datasets import load_lvis_format_json
from ..data.images import read_image
from .render import render_scene, scene_categories

__all__ = ["teacher_objects", "val_objects", "world_annotations"]


def _xyxy(xywh_boxes) -> torch.Tensor:
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
    images, boxes, labels = [], [], []
    for d in load_lvis_format_json(json_file, image_root):
        images.append(
            torch.from_numpy(
                np.ascontiguousarray(read_image(d["file_name"], "RGB").transpose(2, 0, 1))
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
