"""
Generate "shapes world": a synthetic detection dataset in LVIS v1 json format.

Each category is a colour x shape combination ("red triangle"). Images hold several
non-overlapping objects of varied size and rotation on a noisy background; masks are the
exact polygons that were drawn. Categories carry an LVIS frequency ("r"/"c"/"f") derived
from their number of training images with LVIS's thresholds scaled to the dataset size.
The output is deterministic for a given seed.

Layout written under ``root``:
    root/train/000001.png ...            root/val/000001.png ...
    root/annotations/train.json          root/annotations/val.json
"""

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPES", "COLOURS", "ShapesWorldSpec", "generate_shapes_world", "category_names"]

# name -> vertices of the unit shape (radius 1, centred at 0), as (x, y) pairs.
SHAPES: Dict[str, List[Tuple[float, float]]] = {
    "circle": [(math.cos(2 * math.pi * k / 32), math.sin(2 * math.pi * k / 32)) for k in range(32)],
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)],
    "star": [
        ((1.0 if k % 2 == 0 else 0.45) * math.sin(math.pi * k / 5),
         -(1.0 if k % 2 == 0 else 0.45) * math.cos(math.pi * k / 5))
        for k in range(10)
    ],
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
              (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "hexagon": [(math.cos(math.pi * k / 3), math.sin(math.pi * k / 3)) for k in range(6)],
}

# name -> RGB
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 50, 190),
    "orange": (245, 140, 30),
}


@dataclass
class ShapesWorldSpec:
    """What to generate. Sizes in pixels; counts per split."""

    seed: int = 0
    num_train: int = 8
    num_val: int = 4
    image_size: int = 128
    objects_per_image: Tuple[int, int] = (2, 5)  # inclusive range
    object_size: Tuple[int, int] = (14, 40)  # radius range, pixels
    shapes: Sequence[str] = tuple(SHAPES)
    colours: Sequence[str] = tuple(COLOURS)


def category_names(spec: ShapesWorldSpec) -> List[str]:
    """Category names in id order (id = index + 1): every colour x shape pair."""
    return [f"{c} {s}" for s in spec.shapes for c in spec.colours]


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> List[float]:
    ca, sa = math.cos(angle), math.sin(angle)
    flat = []
    for x, y in SHAPES[shape]:
        flat += [cx + radius * (ca * x - sa * y), cy + radius * (sa * x + ca * y)]
    return flat


def _polygon_area(flat: List[float]) -> float:
    xs, ys = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    base = rng.integers(90, 170, size=3)
    noise = rng.normal(0, 12, size=(size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _render_split(rng, spec: ShapesWorldSpec, num_images: int, root: str, split: str,
                  names: List[str]) -> Tuple[List[dict], List[dict]]:
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    size = spec.image_size
    for image_id in range(1, num_images + 1):
        img = _background(rng, size)
        draw = ImageDraw.Draw(img)
        placed: List[Tuple[float, float, float]] = []
        n = int(rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))
        for _ in range(n * 20):  # rejection sampling of non-overlapping discs
            if len(placed) == n:
                break
            r = float(rng.uniform(*spec.object_size))
            cx, cy = rng.uniform(r, size - r, size=2)
            if any(math.hypot(cx - x, cy - y) < r + pr + 2 for x, y, pr in placed):
                continue
            placed.append((cx, cy, r))
            cat = int(rng.integers(len(names)))
            colour, shape = names[cat].split(" ")
            poly = _polygon(shape, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
            draw.polygon(poly, fill=COLOURS[colour])
            xs, ys = poly[0::2], poly[1::2]
            x0, y0 = max(min(xs), 0.0), max(min(ys), 0.0)
            x1, y1 = min(max(xs), size), min(max(ys), size)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": _polygon_area(poly),
                "segmentation": [[round(v, 2) for v in poly]],
            })
        file_name = f"{split}/{image_id:06d}.png"
        img.save(os.path.join(root, file_name))
        images.append({
            "id": image_id,
            "file_name": file_name,
            "height": size,
            "width": size,
            "license": 1,
            "flickr_url": "",
            "coco_url": "",
            "date_captured": "",
            "neg_category_ids": [],
            "not_exhaustive_category_ids": [],
        })
    return images, annotations


# LVIS v1 train: 337 rare, 461 common, 405 frequent categories of 1203.
LVIS_FREQUENCY_SHARES = (("r", 337 / 1203), ("c", 461 / 1203), ("f", 405 / 1203))


def _frequencies(train_anns: List[dict], num_cats: int) -> List[str]:
    """
    LVIS frequency per category from its number of training images: the categories are
    ranked by that count (ties by id) and split in LVIS v1's r/c/f proportions. LVIS's
    absolute thresholds (10 and 100 images of ~100k) mean nothing for a small dataset.
    """
    image_sets = [set() for _ in range(num_cats)]
    for ann in train_anns:
        image_sets[ann["category_id"] - 1].add(ann["image_id"])
    order = sorted(range(num_cats), key=lambda i: (len(image_sets[i]), i))
    out = [""] * num_cats
    start = 0
    for k, (freq, share) in enumerate(LVIS_FREQUENCY_SHARES):
        stop = num_cats if k == len(LVIS_FREQUENCY_SHARES) - 1 else start + round(share * num_cats)
        for i in order[start:stop]:
            out[i] = freq
        start = stop
    return out


def generate_shapes_world(root: str, spec: ShapesWorldSpec = ShapesWorldSpec()) -> Dict[str, str]:
    """
    Write the dataset under ``root`` (see the module docstring for the layout).

    Returns:
        dict: split name -> path of its LVIS-format json.
    """
    rng = np.random.default_rng(spec.seed)
    names = category_names(spec)
    splits = {}
    train = _render_split(rng, spec, spec.num_train, root, "train", names)
    val = _render_split(rng, spec, spec.num_val, root, "val", names)
    freq = _frequencies(train[1], len(names))
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
                "def": f"a {name} drawn on a noisy background",
                "frequency": freq[i],
                "instance_count": counts[i],
                "image_count": len(image_sets[i]),
            }
            for i, name in enumerate(names)
        ]
        data = {
            "info": {"description": f"shapes world ({split}), seed {spec.seed}"},
            "licenses": [{"id": 1, "name": "CC0", "url": ""}],
            "images": images,
            "annotations": anns,
            "categories": categories,
        }
        path = os.path.join(root, "annotations", f"{split}.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        splits[split] = path
    return splits
