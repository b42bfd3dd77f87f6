"""
Generate the shapes world's splits: a synthetic open-vocabulary detection dataset in
LVIS v1 json format.

Each category is a colour x shape pair ("red triangle"). Images hold several objects of
varied size, rotation and colour tint on a textured background (gradients, stripes,
checks, blotches); later objects may hide part of earlier ones, and masks are the exact
visible parts (polygons, from shapely). The training split is long-tailed like LVIS:
base categories follow a Zipf law and the novel ones are rare. Two kinds of novel
category (since world v3):

* **compositional**: ``num_novel`` colour x shape pairs of the base shapes, chosen so
  that every colour and every shape also occurs in base categories: new combinations of
  known attributes (the case a text classifier handles best);
* **concept**: every colour of the ``concept_shapes``, shapes that no base category has.
  Like LVIS's rare objects, their objects appear *unannotated* in many training images
  (in a ``concept_unannotated_share`` of them per category, so that the distillation
  sees them as often whatever the split's size; listed in the image's
  ``not_exhaustive_category_ids``) and annotated in only a few.

Each novel category is annotated in ``novel_train_images`` training images and is LVIS
"rare"; the other categories are split into "c" and "f" by their number of training
images in LVIS v1's c:f proportion. ``shapes_world_train_ov`` drops the rare
annotations. Val is uniform over all categories and exhaustively annotated: every
category absent from a val image is in its ``neg_category_ids``, so LVIS evaluation
counts false positives on every image. Deterministic for a given spec.

Layout written under ``root``:
    root/train/000001.png ...            root/val/000001.png ...
    root/annotations/train.json          root/annotations/val.json

:func:`generate_transfer_split` adds a *transfer* dataset (another vocabulary, as PASCAL
VOC or COCO are to a model trained on LVIS): new val-style images of the same world,
annotated only for ``TRANSFER_COLOURS`` x every shape, listed colour by colour (another
order), so objects of other colours are outside its vocabulary and unannotated:
    root/transfer/000001.png ...         root/annotations/transfer.json
"""

import json
import os
from dataclasses import asdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..utils.atomic_io import atomic_write
from .render import render_scene, scene_plan
from .spec import (
    TRANSFER_COLOURS,
    ShapesWorldSpec,
    category_names,
    concept_novel_ids,
    designed_novel_ids,
    novel_kinds,
    spec_from_json,
    transfer_category_names,
)

__all__ = ["generate_shapes_world", "generate_transfer_split"]


def _render_split(
    rng, spec: ShapesWorldSpec, num_images: int, root: str, split: str
) -> Tuple[List[dict], List[dict]]:
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    num_cats = len(category_names(spec))
    for image_id, plan in enumerate(scene_plan(rng, spec, num_images, split == "train"), start=1):
        img, objects = render_scene(rng, spec, [c for c, _ in plan])
        shown = set()
        unannotated = set()
        for obj in objects:
            if not plan[obj["index"]][1]:
                unannotated.add(obj["category"] + 1)
                continue
            shown.add(obj["category"] + 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["category"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "segmentation": obj["polygons"],
                }
            )
        file_name = f"{split}/{image_id:06d}.png"
        img.save(os.path.join(root, file_name))
        # val is exhaustively annotated: every absent category is a verified negative
        negatives = [c for c in range(1, num_cats + 1) if c not in shown] if split == "val" else []
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": spec.image_size,
                "width": spec.image_size,
                "license": 1,
                "flickr_url": "",
                "coco_url": "",
                "date_captured": "",
                "neg_category_ids": negatives,
                "not_exhaustive_category_ids": sorted(unannotated - shown),
            }
        )
    return images, annotations


# LVIS v1 train: 337 rare, 461 common, 405 frequent categories of 1203.
LVIS_FREQUENCY_SHARES = (("r", 337 / 1203), ("c", 461 / 1203), ("f", 405 / 1203))


def _frequencies(train_anns: List[dict], num_cats: int, rare: Sequence[int]) -> List[str]:
    """
    LVIS frequency per category: the novel categories (``rare``, indices) are "r"; the
    others are ranked by their number of training images (ties by id) and split into "c"
    and "f" in LVIS v1's c:f proportion. LVIS's absolute thresholds (10 and 100 images of
    ~100k) mean nothing for a small dataset.
    """
    image_sets = [set() for _ in range(num_cats)]
    for ann in train_anns:
        image_sets[ann["category_id"] - 1].add(ann["image_id"])
    out = ["r" if i in set(rare) else "" for i in range(num_cats)]
    order = sorted(
        (i for i in range(num_cats) if not out[i]), key=lambda i: (len(image_sets[i]), i)
    )
    shares = dict(LVIS_FREQUENCY_SHARES)
    num_common = round(len(order) * shares["c"] / (shares["c"] + shares["f"]))
    for rank, i in enumerate(order):
        out[i] = "c" if rank < num_common else "f"
    return out


# The transfer dataset's vocabulary: these colours x every shape, colour by colour.


def _write_json(path: str, data: dict) -> None:
    """The split's json (compact), atomically."""
    atomic_write(path, lambda f: json.dump(data, f), mode="w")


def _transfer_categories(vocabulary, anns: List[dict], world_categories: dict) -> List[dict]:
    """The transfer vocabulary's categories (ids 1..), each with the world's fields and counts."""
    categories = []
    for k, name in enumerate(vocabulary):
        cat_anns = [a for a in anns if a["category_id"] == k + 1]
        categories.append(
            {
                **world_categories[name],
                "id": k + 1,
                "instance_count": len(cat_anns),
                "image_count": len({a["image_id"] for a in cat_anns}),
            }
        )
    return categories


def generate_transfer_split(root: str, num_images: int) -> str:
    """
    Write ``root/annotations/transfer.json`` and its images for the world already under
    ``root`` (its spec and category frequencies are read from ``train.json``). Scenes are
    drawn like val's (every category of the world, uniformly) from a stream of their own;
    only the transfer vocabulary's objects are annotated, exhaustively (every vocabulary
    category absent from an image is in its ``neg_category_ids``). A category keeps the
    world's frequency and ``novel_kind``, so APr is still the novel categories' AP.

    Returns:
        the json's path.
    """
    train_json = os.path.join(root, "annotations", "train.json")
    spec = spec_from_json(train_json)
    with open(train_json, encoding="utf-8") as f:
        world_categories = {c["name"]: c for c in json.load(f)["categories"]}
    names = category_names(spec)
    vocabulary = transfer_category_names(spec)
    new_id = {names.index(n) + 1: k + 1 for k, n in enumerate(vocabulary)}
    rng = np.random.default_rng([spec.seed, 2])  # independent of train/val
    images, all_anns = _render_split(rng, spec, num_images, root, "transfer")
    anns = []
    for a in all_anns:
        if a["category_id"] in new_id:
            anns.append({**a, "id": len(anns) + 1, "category_id": new_id[a["category_id"]]})
    shown = {}
    for a in anns:
        shown.setdefault(a["image_id"], set()).add(a["category_id"])
    for img in images:
        img["neg_category_ids"] = [
            c for c in range(1, len(vocabulary) + 1) if c not in shown.get(img["id"], set())
        ]
        img["not_exhaustive_category_ids"] = []
    categories = _transfer_categories(vocabulary, anns, world_categories)
    data = {
        "info": {
            "description": (
                f"shapes world v{spec.version} (transfer: {len(vocabulary)} categories of "
                f"colours {', '.join(TRANSFER_COLOURS)}), seed {spec.seed}"
            ),
            "spec": asdict(spec),
        },
        "licenses": [{"id": 1, "name": "CC0", "url": ""}],
        "images": images,
        "annotations": anns,
        "categories": categories,
    }
    path = os.path.join(root, "annotations", "transfer.json")
    _write_json(path, data)
    return path


def generate_shapes_world(root: str, spec: ShapesWorldSpec = ShapesWorldSpec()) -> Dict[str, str]:
    """
    Write the dataset under ``root`` (see the module docstring for the layout).

    Returns:
        dict: split name -> path of its LVIS-format json.
    """
    rng = np.random.default_rng(spec.seed)
    names = category_names(spec)
    splits = {}
    train = _render_split(rng, spec, spec.num_train, root, "train")
    val = _render_split(rng, spec, spec.num_val, root, "val")
    kinds = novel_kinds(spec)
    freq = _frequencies(train[1], len(names), sorted(kinds))
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for split, (images, anns) in (("train", train), ("val", val)):
        counts = [0] * len(names)
        image_sets = [set() for _ in names]
        for a in anns:
            counts[a["category_id"] - 1] += 1
            image_sets[a["category_id"] - 1].add(a["image_id"])
        categories = [
            {
                "id": i + 1,
                "name": name,
                "synset": name.replace(" ", "_") + ".n.01",
                "synonyms": [name],
                "def": f"a {name} drawn on a textured background",
                "frequency": freq[i],
                "novel_kind": kinds.get(i, ""),  # "compositional" / "concept" for novel categories
                "instance_count": counts[i],
                "image_count": len(image_sets[i]),
            }
            for i, name in enumerate(names)
        ]
        data = {
            "info": {
                "description": f"shapes world v{spec.version} ({split}), seed {spec.seed}",
                "designed_novel": [names[i] for i in designed_novel_ids(spec)],
                "concept_novel": [names[i] for i in concept_novel_ids(spec)],
                "spec": asdict(spec),
            },
            "licenses": [{"id": 1, "name": "CC0", "url": ""}],
            "images": images,
            "annotations": anns,
            "categories": categories,
        }
        path = os.path.join(root, "annotations", f"{split}.json")
        _write_json(path, data)
        splits[split] = path
    return splits
